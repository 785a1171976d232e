"""The simulated internet: real DNS and SMTP servers on loopback for tests, benchmarks and the demo."""
