//! The runtime's integration tests against a real RabbitMQ.

mod broker;
