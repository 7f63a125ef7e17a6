//! Test Docker volume plugins served on unix sockets from inside the test process.
