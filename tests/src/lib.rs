//! End-to-end tests of Surety.
//!
//! This crate will start real `surety` broker processes on loopback with temporary data
//! directories and drive them with real third-party Kafka clients (kcat, kafka-python,
//! confluent-kafka), including kill -9 and restart, so that compatibility and durability claims
//! are shown against the binary users run rather than against in-process stand-ins.
