//! An open streamed answer: SSE frames decoded into [`StreamEvent`]s, bounded by the stall
//! timeout; dropping it closes the connection.

use std::collections::VecDeque;
use std::fmt;
use std::io::Cursor;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use reqwest::Response;
use sse_stream::{Sse, SseByteStream};

use crate::agent::sse::EventDecoder;

use super::*;
use super::{client::*, wire::*};

pub(super) type SseBlocks = Pin<Box<dyn Stream<Item = Result<Sse, sse_stream::Error>> + Send>>;

/// An open streamed answer. Dropping it closes the connection at once (that is how a cancel
/// stops the spend).
pub struct ModelStream {
    blocks: SseBlocks,
    decoder: EventDecoder,
    pending: VecDeque<StreamEvent>,
    ended: bool,
    stall_timeout: Duration,
}

impl fmt::Debug for ModelStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelStream")
            .field("usage", &self.usage())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ModelStream {
    pub(super) fn from_response(response: Response, stall_timeout: Duration) -> Self {
        let mut stream = Self::from_blocks(Box::pin(SseByteStream::new(response.bytes_stream())));
        stream.stall_timeout = stall_timeout;
        stream
    }

    /// A stream over a recorded answer, delivered in these chunks (for tests of code that
    /// consumes a [`ModelStream`]).
    pub fn from_chunks<I, C>(chunks: I) -> Self
    where
        I: IntoIterator<Item = C>,
        C: Into<Vec<u8>>,
    {
        let chunks: Vec<Result<Cursor<Vec<u8>>, std::io::Error>> =
            chunks.into_iter().map(|chunk| Ok(Cursor::new(chunk.into()))).collect();
        Self::from_blocks(Box::pin(SseByteStream::new(stream::iter(chunks))))
    }

    fn from_blocks(blocks: SseBlocks) -> Self {
        Self {
            blocks,
            decoder: EventDecoder::new(),
            pending: VecDeque::new(),
            ended: false,
            stall_timeout: STALL_TIMEOUT,
        }
    }

    /// The next event; `Ok(None)` after `message_stop` (or a clean end). An `error` event →
    /// `Err(Stream{..})`; a body that ends before `message_stop` → `Err(Connection)`; an
    /// event out of protocol → `Err(Malformed)`. After an error the stream is over (the
    /// connection is closed) and further calls answer `Ok(None)`.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ProviderError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            let Ok(next) = tokio::time::timeout(self.stall_timeout, self.blocks.next()).await
            else {
                let error =
                    format!("the stream sent nothing for {} s", self.stall_timeout.as_secs());
                return Err(self.fail(ProviderError::Connection(error)));
            };
            let block = match next {
                Some(Ok(block)) => block,
                Some(Err(error)) => return Err(self.fail(framing_error(error))),
                None => {
                    let error = "the stream ended before message_stop".to_owned();
                    return Err(self.fail(ProviderError::Connection(error)));
                }
            };
            match self.decoder.decode(&block) {
                Ok(events) => self.pending.extend(events),
                Err(error) => return Err(self.fail(error)),
            }
            self.ended = self.decoder.is_finished();
        }
    }

    /// Usage known so far (from `message_start` and `message_delta`), also after an error or
    /// before drop, so a call cut off still reports what is known.
    pub fn usage(&self) -> Usage {
        self.decoder.usage()
    }

    /// Ends the stream with `error`, closing the connection now rather than at drop.
    fn fail(&mut self, error: ProviderError) -> ProviderError {
        self.ended = true;
        self.pending.clear();
        self.blocks = Box::pin(stream::empty());
        error
    }
}

pub(super) fn framing_error(error: sse_stream::Error) -> ProviderError {
    match error {
        sse_stream::Error::Body(cause) => ProviderError::Connection(error_chain(cause.as_ref())),
        other => ProviderError::Malformed(error_chain(&other)),
    }
}
