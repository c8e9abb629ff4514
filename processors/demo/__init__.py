"""Demo processors for the first runnable slice (`convergence dev demo`) and for smoke tests."""
