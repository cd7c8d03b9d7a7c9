//! Sends a 200 head and the first half of a body, waits long enough for
//! both to reach the client, then traps: the client must see the body cut,
//! not ended.

use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(_request: IncomingRequest, out: ResponseOutparam) {
    use futures::SinkExt;
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
