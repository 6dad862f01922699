//! End-to-end tests: the real daemon on a free loopback port, driven over
//! real HTTP and WebSockets, with the project's fake agent and real adapter
//! components. One binary, so wasmtime is linked once.

mod acp;
mod auth;
mod claude;
mod cli;
mod connections;
mod deploy;
mod durable;
mod guests;
mod harness;
mod languages;
mod lifecycle;
mod ops;
mod pi;
mod push;
mod reconnect;
mod reload;
mod rest;
mod review;
mod web;
mod websocket;
mod wit_v2;
