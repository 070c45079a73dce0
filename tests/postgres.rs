//! The contract suite on PostgreSQL, plus PostgreSQL-specific behaviour: partitions, pool limits, server
//! restarts, TLS modes, concurrent migrations.

mod common;
mod contract;

contract_suite!(common::postgres);
