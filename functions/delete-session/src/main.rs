//! Lambda for `DELETE /api/managed-agents/session`; see `knoq_shared::routes::delete_session`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    knoq_shared::lambda::serve(knoq_shared::routes::delete_session::handle).await
}
