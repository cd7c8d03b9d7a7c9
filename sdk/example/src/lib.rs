//! A guestbook: `POST /` with `{"name", "message"}` signs it, `GET /` reads
//! its first hundred entries. The HTTP side is spin-sdk's; the table is the tenant's own, reached
//! through `zatabase_sdk::sql`, and each signature is logged. Anyone who
//! can call the function reads; signing takes Write on the `guestbook`
//! table (`zatabase_sdk::check`): the function's SQL has the tenant's full
//! rights, so the function decides what its caller may do.

use serde::{Deserialize, Serialize};
use serde_json::json;
use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;

#[derive(Deserialize)]
struct Signature {
    name: String,
    message: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    id: i64,
    name: String,
    message: String,
    signed_at: String,
}

fn answer(status: u16, body: serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.to_string())
        .build()
}

fn fail(error: zatabase_sdk::sql::Error) -> Response {
    answer(500, json!({ "error": error.to_string() }))
}

#[http_component]
fn handle(request: Request) -> impl IntoResponse {
    if let Err(error) = zatabase_sdk::sql::execute(
        "CREATE TABLE IF NOT EXISTS guestbook (id bigserial PRIMARY KEY, name text NOT NULL,
           message text NOT NULL, signed_at timestamptz NOT NULL DEFAULT now())",
        &[],
    ) {
        return fail(error);
    }
    match request.method() {
        Method::Get => match zatabase_sdk::sql::query::<Entry>(
            // The first hundred: a result past the host's caps is an error.
            "SELECT id, name, message, signed_at::text AS signed_at FROM guestbook ORDER BY id LIMIT 100",
            &[],
        ) {
            Ok(entries) => answer(200, json!({ "entries": entries })),
            Err(error) => fail(error),
        },
        Method::Post => {
            use zatabase_sdk::{Action, Resource};
            if let Err(refusal) =
                zatabase_sdk::check(Resource::Tables, Some("guestbook"), Action::Write)
            {
                return answer(
                    403,
                    json!({ "error": "Forbidden", "message": refusal, "status": 403 }),
                );
            }
            let Ok(signature) = serde_json::from_slice::<Signature>(request.body()) else {
                return answer(400, json!({ "error": "expected {\"name\", \"message\"}" }));
            };
            let signed = zatabase_sdk::sql::query::<Entry>(
                "INSERT INTO guestbook (name, message) VALUES ($1, $2)
                 RETURNING id, name, message, signed_at::text AS signed_at",
                &[json!(signature.name), json!(signature.message)],
            );
            match signed {
                Ok(mut rows) => {
                    let entry = rows.remove(0);
                    let by = zatabase_sdk::caller().map_or("anonymous".to_owned(), |c| c.user_id);
                    zatabase_sdk::log::info(&format!("{} signed (caller {by})", entry.name));
                    answer(201, json!(entry))
                }
                Err(error) => fail(error),
            }
        }
        _ => answer(405, json!({ "error": "GET or POST" })),
    }
}
