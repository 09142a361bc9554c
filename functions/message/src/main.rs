//! Lambda for `POST /api/managed-agents/message`; see `knoq_shared::routes::message`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    knoq_shared::lambda::serve(knoq_shared::routes::message::handle).await
}
