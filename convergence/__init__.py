"""The `convergence` command line: the front door for every job."""
