"""Efficacy (downstream utility): train on synthetic, test on real."""
