//! Serves the fake LLM API on 127.0.0.1 for manual runs of the real agents
//! (prints its URL, then serves for `--seconds N`, default 600, and exits).

use std::time::Duration;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let llm = amarre_e2e::fake_llm::FakeLlm::start().await;
    println!("{}", llm.url);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}
