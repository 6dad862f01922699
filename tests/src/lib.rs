//! Helpers shared by the end-to-end tests and the project's tools: the
//! fake LLM API that lets the real agent CLIs run offline.

pub mod bench;
pub mod bench_durable;
pub mod fake_expo;
pub mod fake_llm;
pub mod fake_openai;
pub mod floor;
