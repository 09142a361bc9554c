//! Logging, set up once per container: JSON lines on stdout, level from `RUST_LOG`.

/// Installs the global `tracing` subscriber (JSON, no ANSI colours, no timestamps: Lambda
/// adds its own). Calling it twice is harmless.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .with_current_span(false)
        .try_init();
}
