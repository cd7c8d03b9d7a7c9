//! Sends a 200 head and the first half of a body, waits long enough for
//! both to reach the client, then traps: the client must see the body cut,
//! not ended.
//!
//! At `.../late-echo` it answers 200 at once, then echoes the request's
//! body as it reads it, and ends its answer when the body ends or fails.

use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    use futures::{SinkExt, StreamExt};
    if request
        .path_with_query()
        .unwrap_or_default()
        .ends_with("/late-echo")
    {
        let response = OutgoingResponse::new(Fields::new());
        response.set_status_code(200).expect("a valid status");
        let mut body = response.take_body();
        out.set(response);
        let mut incoming = request.into_body_stream();
        while let Some(Ok(chunk)) = incoming.next().await {
            if body.send(chunk).await.is_err() {
                return;
            }
        }
        return;
    }
    let headers = Fields::from_list(&[("content-type".to_owned(), b"text/plain".to_vec())])
        .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(200).expect("a valid status");
    let mut body = response.take_body();
    out.set(response);
    body.send(b"the first half\n".to_vec())
        .await
        .expect("the client reads");
    std::thread::sleep(std::time::Duration::from_millis(300));
    panic!("the function failed halfway through its body");
}
