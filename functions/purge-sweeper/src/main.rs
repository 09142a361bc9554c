//! Lambda run on a schedule that finishes deleted sessions' purges; see `knoq_shared::purge`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    knoq_shared::lambda::serve_purge_sweeper().await
}
