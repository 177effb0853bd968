//! One `/ws/events` connection for the whole app. Pages register listeners (and job
//! subscriptions for metrics and logs) while they are shown; the hub reconnects with a delay
//! and re-subscribes. After every (re)connect listeners see the server's `Welcome`, which
//! pages take as "fetch again": events missed while disconnected are not replayed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::{SinkExt, StreamExt};
use gloo_net::websocket::Message;
use gloo_net::websocket::futures::WebSocket;
use kiln_proto::protocol::{ClientMessage, JobId, PROTOCOL_VERSION, ServerEvent};
use leptos::task::spawn_local;

type Listener = Rc<dyn Fn(&ServerEvent)>;

#[derive(Default)]
struct Hub {
    started: bool,
    next_id: u64,
    listeners: Vec<(u64, Listener)>,
    /// Job id → how many pages want its metrics and logs.
    subscriptions: HashMap<JobId, usize>,
    out: Option<UnboundedSender<ClientMessage>>,
}

thread_local! {
    static HUB: RefCell<Hub> = RefCell::new(Hub::default());
}

/// Call `f` for every event until [`unlisten`]. Starts the connection on first use.
pub fn listen(f: impl Fn(&ServerEvent) + 'static) -> u64 {
    let id = HUB.with_borrow_mut(|hub| {
        hub.next_id += 1;
        hub.listeners.push((hub.next_id, Rc::new(f)));
        hub.next_id
    });
    ensure_started();
    id
}

pub fn unlisten(id: u64) {
    HUB.with_borrow_mut(|hub| hub.listeners.retain(|(i, _)| *i != id));
}

/// Ask for a job's metrics and logs too (reference counted across pages).
pub fn subscribe(job_id: JobId) {
    let send = HUB.with_borrow_mut(|hub| {
        let n = hub.subscriptions.entry(job_id).or_insert(0);
        *n += 1;
        (*n == 1).then(|| hub.out.clone()).flatten()
    });
    if let Some(out) = send {
        let _ = out.unbounded_send(ClientMessage::Subscribe { job_id });
    }
    ensure_started();
}

pub fn unsubscribe(job_id: JobId) {
    let send = HUB.with_borrow_mut(|hub| {
        let n = hub.subscriptions.get_mut(&job_id)?;
        *n -= 1;
        if *n == 0 {
            hub.subscriptions.remove(&job_id);
            hub.out.clone()
        } else {
            None
        }
    });
    if let Some(out) = send {
        let _ = out.unbounded_send(ClientMessage::Unsubscribe { job_id });
    }
}

fn ensure_started() {
    let start = HUB.with_borrow_mut(|hub| !std::mem::replace(&mut hub.started, true));
    if start {
        spawn_local(run());
    }
}

fn dispatch(event: &ServerEvent) {
    // Clone the list first: a listener may (un)register.
    let listeners: Vec<Listener> =
        HUB.with_borrow(|hub| hub.listeners.iter().map(|(_, f)| f.clone()).collect());
    for f in listeners {
        f(event);
    }
}

fn url(token: &str) -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!(
        "{scheme}://{}/ws/events?access_token={}",
        location.host().ok()?,
        super::api::enc(token)
    ))
}

async fn run() {
    let mut delay_ms = 500;
    loop {
        if let Some(token) = super::api::token()
            && let Some(url) = url(&token)
            && let Ok(ws) = WebSocket::open(&url)
        {
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = unbounded::<ClientMessage>();
            let _ = tx.unbounded_send(ClientMessage::Hello {
                protocol_version: PROTOCOL_VERSION,
            });
            let subs: Vec<JobId> =
                HUB.with_borrow(|hub| hub.subscriptions.keys().copied().collect());
            for job_id in subs {
                let _ = tx.unbounded_send(ClientMessage::Subscribe { job_id });
            }
            HUB.with_borrow_mut(|hub| hub.out = Some(tx));
            spawn_local(async move {
                while let Some(msg) = rx.next().await {
                    let Ok(text) = serde_json::to_string(&msg) else {
                        continue;
                    };
                    if sink.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(Message::Text(text))) = stream.next().await {
                if let Ok(event) = serde_json::from_str::<ServerEvent>(&text) {
                    if matches!(event, ServerEvent::Welcome { .. }) {
                        delay_ms = 500;
                    }
                    dispatch(&event);
                }
            }
            // Dropping the sender ends the writer task.
            HUB.with_borrow_mut(|hub| hub.out = None);
        }
        gloo_timers::future::TimeoutFuture::new(delay_ms).await;
        delay_ms = (delay_ms * 2).min(8_000);
    }
}
