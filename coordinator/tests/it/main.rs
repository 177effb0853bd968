//! Integration tests of the coordinator: real SQLite files in temp dirs, real TCP on
//! 127.0.0.1:0, real WebSockets (tokio-tungstenite). One binary keeps link time down.

mod api;
mod cluster;
mod control;
mod datasets;
mod fuzz_corpus;
mod import;
mod restart;
mod shares;
mod support;
mod tokens;
mod worker;
