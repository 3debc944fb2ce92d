"""Course exercises on RL hashing: ``python -m examples.course.check N FILE`` grades one."""
