//! Host inspection for tests: mounts in /proc/self/mountinfo, loop devices, temp roots.
