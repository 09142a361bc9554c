//! The Anthropic Messages API adapter: one streamed model call, with retries. (Being built.)
