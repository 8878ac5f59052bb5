//! Server-sent events for one execution: the whole execution after every committed change,
//! ending with the event that shows it complete.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// `GET /api/v1/executions/{id}/events`.
pub async fn execution_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before the first read so no change between the two is missed.
    let mut rx = s.engine.subscribe();
    let Some(first) = s.engine.get_execution(&id).await? else {
        return Err(ApiError::NotFound(format!("no execution \"{id}\"")));
    };
    let engine = s.engine.clone();
    let stopping = s.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        let mut done = first.status.is_complete();
        if tx.send(event(&first)).await.is_err() {
            return;
        }
        while !done {
            let next = tokio::select! {
                _ = stopping.cancelled() => return,
                r = tokio::time::timeout(Duration::from_secs(5), rx.recv()) => r,
            };
            let changed = match next {
                Ok(Ok(e)) => e.execution_id == id,
                Ok(Err(RecvError::Lagged(_))) => true,
                Ok(Err(RecvError::Closed)) => return,
                Err(_) => true, // periodic refresh
            };
            if !changed {
                continue;
            }
            match engine.get_execution(&id).await {
                Ok(Some(e)) => {
                    done = e.status.is_complete();
                    if tx.send(event(&e)).await.is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event(e: &ferry_core::Execution) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event("execution")
        .data(crate::execution_json(e).to_string()))
}

/// A stream fed by a task through a small channel (backpressure: the task waits for the client).
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
