//! End-to-end tests of the gate's HTTP/2 upstreams, gRPC and upgrades
//! (issue 16) against real `ward gate serve` processes: Python's grpcio as
//! gRPC client and server (`gate_grpc/*.py`), Python's `websockets` for
//! WebSocket, curl for hostile requests, h2load (nghttp2) for load over
//! HTTP/2. A test whose tool is missing says so and passes, unless `CI` is
//! set: then it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly

mod common;
#[path = "gate_grpc/grpc.rs"]
mod grpc;
#[path = "gate_grpc/h2.rs"]
mod h2;
#[allow(dead_code, unused_imports)] // shared with tests/gate: this binary uses part of it
#[path = "gate/harness.rs"]
mod harness;
#[path = "gate_grpc/memory.rs"]
mod memory;
#[allow(dead_code)] // as above
#[path = "gate/pki.rs"]
mod pki;
#[path = "gate_grpc/support.rs"]
mod support;
#[path = "gate_grpc/websocket.rs"]
mod websocket;
