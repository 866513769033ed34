"""`lab mutate`: mutation testing of the kernel code under test (issue 14)."""
