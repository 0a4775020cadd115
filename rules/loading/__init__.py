"""Loading: labels, BUILD.py files and the rule functions they call."""
