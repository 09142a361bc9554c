//! One model call of a turn: opened with the lease renewed first, streamed into the
//! transcript (text flushed every [`WorkerSettings::flush_every`], in pieces of at most
//! [`PIECE_BYTES`]), retried when it fails before it produced anything, dropped at once when
//! the stop watch or a heartbeat finds the turn no longer this worker's.

use super::*;

impl Play<'_> {
    /// One model call, streamed into the transcript: `None` when the turn stopped being
    /// this worker's; else the stop reason, the assistant's content and the tool calls to
    /// run, or how the turn failed. A call that fails before it produced anything is tried
    /// again (as many times as the provider's own retries allow).
    #[allow(clippy::type_complexity)]
    pub(super) async fn call(
        &mut self,
        messages: &[Message],
        specs: &[ToolSpec],
    ) -> Result<
        Option<
            Result<(String, Vec<ContentBlock>, Vec<(String, String, serde_json::Value)>), TurnEnd>,
        >,
        WorkerError,
    > {
        let attempts = self.worker.provider.config().max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let worker = self.worker;
            let Some(opened) = self.open(messages, specs).await? else {
                return Ok(None);
            };
            let stream = match opened {
                Ok(stream) => stream,
                Err(error) => return Ok(Some(Err(failure(&worker.provider.redacted(error))))),
            };
            let mut streamed = Streamed::default();
            let result = self.stream(stream, &mut streamed).await;
            let (usage, outcome) = result?;
            self.add_usage(usage).await?;
            match outcome {
                StreamOutcome::Stopped => return Ok(None),
                StreamOutcome::Done(stop_reason) => {
                    let mut content = Vec::new();
                    if !streamed.text.is_empty() {
                        content.push(ContentBlock::Text { text: streamed.text });
                    }
                    for (id, name, input) in &streamed.tool_calls {
                        content.push(ContentBlock::ToolUse {
                            id: id.clone(),
                            name: name.clone(),
                            input: input.clone(),
                        });
                    }
                    return Ok(Some(Ok((stop_reason, content, streamed.tool_calls))));
                }
                StreamOutcome::Failed(error) => {
                    let nothing_written =
                        streamed.text.is_empty() && streamed.tool_calls.is_empty();
                    if nothing_written && error.is_retryable() && attempt < attempts {
                        tracing::warn!(%error, attempt, "model call failed mid-stream; trying again");
                        let pause =
                            tokio::time::sleep(Duration::from_millis(500 << attempt.min(5)));
                        if self.watched(pause).await?.is_none() {
                            return Ok(None);
                        }
                        continue;
                    }
                    return Ok(Some(Err(failure(&self.worker.provider.redacted(error)))));
                }
            }
        }
    }

    /// Opens the model call's stream, with the provider's retries (429, 529, 5xx, a lost
    /// connection) taken here one attempt at a time: `None` when the turn stopped being
    /// this worker's. Before every attempt, the first and each retry, the lease is renewed,
    /// which the guard refuses once the session is cancelled: a turn that stopped being ours
    /// since the last write or heartbeat (a cancel while the transcript was read, a tool ran,
    /// a retry waited) spends nothing more. The stop watch runs beside each attempt and each
    /// wait, but its read may come late; without the renewal a retry could open a model call
    /// after the cancel's answer (chaos seeds 608 and 609: a 529, then the retry 140 ms
    /// after the answer).
    async fn open(
        &mut self,
        messages: &[Message],
        specs: &[ToolSpec],
    ) -> Result<Option<Result<ModelStream, ProviderError>>, WorkerError> {
        let provider = &self.worker.provider;
        let mut attempt = 1;
        loop {
            if !self.renew_lease().await? {
                return Ok(None);
            }
            let Some(opened) =
                self.watched(provider.open_attempt(messages, specs, attempt)).await?
            else {
                return Ok(None);
            };
            match opened {
                Ok(stream) => return Ok(Some(Ok(stream))),
                Err(OpenFailure { error, retry_in: None }) => return Ok(Some(Err(error))),
                Err(OpenFailure { retry_in: Some(wait), .. }) => {
                    if self.watched(tokio::time::sleep(wait)).await?.is_none() {
                        return Ok(None);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Reads one streamed answer to its end, writing text and tool calls as they complete.
    /// Answers the call's usage (as far as known, also when cut off) and how it ended.
    async fn stream(
        &mut self,
        mut stream: ModelStream,
        streamed: &mut Streamed,
    ) -> Result<(Usage, StreamOutcome), WorkerError> {
        let mut assembler = Assembler::new();
        let mut pending = String::new();
        // The escaped size of `pending` (at least: pieces flushed early are not taken off).
        let mut pending_bytes = 0;
        let mut last_flush = tokio::time::Instant::now();
        loop {
            // With text pending, the wait for the next event ends at the flush's due time, so
            // text is written on time also while the model pauses. `ModelStream::next` is
            // cancel-safe: dropping it between events loses nothing.
            let flush_due =
                (!pending.is_empty()).then(|| last_flush + self.worker.settings.flush_every);
            let next_or_due = async {
                match flush_due {
                    None => Some(stream.next().await),
                    Some(due) => tokio::select! {
                        next = stream.next() => Some(next),
                        () = tokio::time::sleep_until(due) => None,
                    },
                }
            };
            let Some(next) = self.watched(next_or_due).await? else {
                // Dropping the stream closes the provider connection.
                let usage = stream.usage();
                drop(stream);
                tracing::info!(session_id = %self.turn.session_id, "turn stopped; model call dropped");
                return Ok((usage, StreamOutcome::Stopped));
            };
            let Some(next) = next else {
                // The flush is due and the model has sent nothing new.
                if !self.flush(&mut pending, streamed).await? {
                    return Ok((stream.usage(), StreamOutcome::Stopped));
                }
                pending_bytes = 0;
                last_flush = tokio::time::Instant::now();
                continue;
            };
            let outputs = match next.and_then(|event| match event {
                Some(event) => assembler.push(event),
                None => {
                    Err(ProviderError::Malformed("the stream ended before message_stop".into()))
                }
            }) {
                Ok(outputs) => outputs,
                Err(error) => {
                    // What the model sent before the failure is in the transcript too.
                    if !self.flush(&mut pending, streamed).await? {
                        return Ok((stream.usage(), StreamOutcome::Stopped));
                    }
                    return Ok((stream.usage(), StreamOutcome::Failed(error)));
                }
            };
            for output in outputs {
                match output {
                    Output::Text(text) => {
                        pending_bytes += escaped_size(&text);
                        pending.push_str(&text);
                    }
                    Output::ToolUse { id, name, input } => {
                        if !self.flush(&mut pending, streamed).await? {
                            return Ok((stream.usage(), StreamOutcome::Stopped));
                        }
                        let event = NewEvent::new(
                            EventType::ToolUse,
                            json!({ "toolUseId": id, "name": name, "input": input }),
                        );
                        if !self.write(&event).await? {
                            return Ok((stream.usage(), StreamOutcome::Stopped));
                        }
                        streamed.tool_calls.push((id, name, input));
                    }
                    Output::Done { stop_reason, usage } => {
                        if !self.flush(&mut pending, streamed).await? {
                            return Ok((usage, StreamOutcome::Stopped));
                        }
                        return Ok((usage, StreamOutcome::Done(stop_reason)));
                    }
                }
            }
            let due = last_flush.elapsed() >= self.worker.settings.flush_every
                || pending_bytes >= PIECE_BYTES;
            if !pending.is_empty() && due {
                if !self.flush(&mut pending, streamed).await? {
                    return Ok((stream.usage(), StreamOutcome::Stopped));
                }
                pending_bytes = 0;
                last_flush = tokio::time::Instant::now();
            }
        }
    }

    /// Writes the text streamed since the last flush as `agent_message` events, each at
    /// most [`PIECE_BYTES`] once stored.
    async fn flush(
        &mut self,
        pending: &mut String,
        streamed: &mut Streamed,
    ) -> Result<bool, WorkerError> {
        while !pending.is_empty() {
            let end = piece_end(pending, PIECE_BYTES);
            let event = NewEvent::new(EventType::AgentMessage, json!({ "text": &pending[..end] }));
            if !self.write(&event).await? {
                return Ok(false);
            }
            streamed.text.push_str(&pending[..end]);
            pending.drain(..end);
        }
        Ok(true)
    }
}

/// What one model call has written so far.
#[derive(Default)]
struct Streamed {
    text: String,
    tool_calls: Vec<(String, String, serde_json::Value)>,
}

enum StreamOutcome {
    Done(String),
    Failed(ProviderError),
    Stopped,
}
