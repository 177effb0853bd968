//! Golden JSON for every message: a change to the wire shows here in review.
//!
//! Each case serializes a fixed value, compares it with a literal, and parses the literal back.
//! Job specs are pinned by `spec/tests.rs`; here they stand in as `SPEC`.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;
use crate::metric::{Metric, Split};

fn spec() -> JobSpec {
    JobSpec::from_json_str(
        r#"{"name":"golden","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"}}"#,
    )
    .expect("the golden spec is valid")
}

/// `expected` with `SPEC` replaced by the golden spec's JSON.
fn with_spec(expected: &str) -> String {
    expected.replace(
        "SPEC",
        &serde_json::to_string(&spec()).expect("a spec serializes"),
    )
}

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T, expected: &str) {
    let expected = with_spec(expected);
    let json = serde_json::to_string(&value).expect("serializes");
    assert_eq!(json, expected, "serialized form of {value:?}");
    let back: T = serde_json::from_str(&expected).expect("the golden JSON parses");
    assert_eq!(back, value, "parsed back from {expected}");
}

fn caps() -> Capabilities {
    Capabilities {
        devices: vec![DeviceRequest::Cpu, DeviceRequest::Wgpu],
        device_names: vec!["cpu".into(), "llvmpipe".into()],
        memory_mb: 2048,
        cores: 2,
        kiln_version: "0.1.0".into(),
        peer_addr: None,
        browser: false,
        control: false,
    }
}

const A: AttemptRef = AttemptRef {
    job_id: 7,
    attempt: 2,
};

fn metric() -> Metric {
    Metric {
        step: 10,
        epoch: 0.5,
        split: Split::Train,
        loss: 1.25,
        accuracy: Some(0.5),
        lr: None,
        samples_per_sec: None,
    }
}

fn job() -> JobInfo {
    JobInfo {
        id: 7,
        name: "golden".into(),
        state: JobState::Running,
        priority: 1,
        group: None,
        created_ms: 1000,
        started_ms: Some(2000),
        finished_ms: None,
        attempts: 2,
        max_attempts: 3,
        worker_id: Some("w1".into()),
        step: 10,
        total_steps: 100,
        error: None,
        spec: spec(),
        notes: String::new(),
        tags: Vec::new(),
        revision: 41,
        dataset_name: None,
        paused: false,
        lr_changes: Vec::new(),
        forked_from: None,
    }
}

fn worker() -> WorkerInfo {
    WorkerInfo {
        id: "w1".into(),
        name: "box".into(),
        capabilities: caps(),
        connected: true,
        draining: false,
        last_seen_ms: 3000,
        running: Some(A),
        revision: 42,
    }
}

const CAPS: &str = r#"{"devices":["cpu","wgpu"],"device_names":["cpu","llvmpipe"],"memory_mb":2048,"cores":2,"kiln_version":"0.1.0"}"#;

#[test]
fn worker_messages() {
    check(
        WorkerMessage::Hello {
            protocol_version: 1,
            worker_id: "w1".into(),
            name: "box".into(),
            capabilities: caps(),
            running: vec![A],
        },
        &format!(
            r#"{{"type":"hello","protocol_version":1,"worker_id":"w1","name":"box","capabilities":{CAPS},"running":[{{"job_id":7,"attempt":2}}]}}"#
        ),
    );
    check(
        WorkerMessage::Hello {
            protocol_version: 1,
            worker_id: "w2".into(),
            name: "box".into(),
            capabilities: Capabilities {
                peer_addr: Some("10.0.0.2:7070".into()),
                browser: false,
                ..caps()
            },
            running: vec![],
        },
        r#"{"type":"hello","protocol_version":1,"worker_id":"w2","name":"box","capabilities":{"devices":["cpu","wgpu"],"device_names":["cpu","llvmpipe"],"memory_mb":2048,"cores":2,"kiln_version":"0.1.0","peer_addr":"10.0.0.2:7070"},"running":[]}"#,
    );
    check(
        WorkerMessage::Heartbeat { running: vec![A] },
        r#"{"type":"heartbeat","running":[{"job_id":7,"attempt":2}]}"#,
    );
    check(
        WorkerMessage::Started {
            attempt: A,
            device: "cpu".into(),
            total_steps: 100,
            start_step: 0,
        },
        r#"{"type":"started","job_id":7,"attempt":2,"device":"cpu","total_steps":100,"start_step":0}"#,
    );
    check(
        WorkerMessage::Metrics {
            attempt: A,
            points: vec![metric()],
        },
        r#"{"type":"metrics","job_id":7,"attempt":2,"points":[{"step":10,"epoch":0.5,"split":"train","loss":1.25,"accuracy":0.5}]}"#,
    );
    check(
        WorkerMessage::Logs {
            attempt: A,
            lines: vec![LogLine {
                ts_ms: 5,
                text: "hi".into(),
            }],
        },
        r#"{"type":"logs","job_id":7,"attempt":2,"lines":[{"ts_ms":5,"text":"hi"}]}"#,
    );
    check(
        WorkerMessage::Controlled {
            attempt: A,
            step: 120,
            control: ControlAction::SetLr { lr: 0.005 },
        },
        r#"{"type":"controlled","job_id":7,"attempt":2,"step":120,"control":{"action":"set_lr","lr":0.005}}"#,
    );
    check(
        WorkerMessage::Checkpoint {
            attempt: A,
            step: 10,
            artifact: "checkpoint-0000000010.ckpt".into(),
        },
        r#"{"type":"checkpoint","job_id":7,"attempt":2,"step":10,"artifact":"checkpoint-0000000010.ckpt"}"#,
    );
    check(
        WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Failed,
            error: Some("boom".into()),
            steps: 10,
            retryable: Some(true),
        },
        r#"{"type":"finished","job_id":7,"attempt":2,"outcome":"failed","error":"boom","steps":10,"retryable":true}"#,
    );
    check(
        WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Failed,
            error: Some("the loss became NaN at step 37".into()),
            steps: 37,
            retryable: Some(false),
        },
        r#"{"type":"finished","job_id":7,"attempt":2,"outcome":"failed","error":"the loss became NaN at step 37","steps":37,"retryable":false}"#,
    );
    check(
        WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Succeeded,
            error: None,
            steps: 100,
            retryable: None,
        },
        r#"{"type":"finished","job_id":7,"attempt":2,"outcome":"succeeded","steps":100}"#,
    );
}

#[test]
fn worker_hello_defaults() {
    let hello: WorkerMessage = serde_json::from_str(&format!(
        r#"{{"type":"hello","protocol_version":1,"worker_id":"w1","name":"box","capabilities":{CAPS}}}"#
    ))
    .expect("running is optional");
    assert!(matches!(hello, WorkerMessage::Hello { running, .. } if running.is_empty()));
}

#[test]
fn finished_without_retryable_is_an_older_workers_failure() {
    // Workers from before the field: nothing said, so the coordinator retries as before.
    let old: WorkerMessage = serde_json::from_str(
        r#"{"type":"finished","job_id":7,"attempt":2,"outcome":"failed","error":"boom","steps":10}"#,
    )
    .expect("retryable is optional");
    assert_eq!(
        old,
        WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Failed,
            error: Some("boom".into()),
            steps: 10,
            retryable: None,
        }
    );
}

#[test]
fn coordinator_messages() {
    check(
        CoordinatorMessage::Welcome {
            protocol_version: 1,
            worker_id: "w1".into(),
            heartbeat_interval_ms: 2000,
        },
        r#"{"type":"welcome","protocol_version":1,"worker_id":"w1","heartbeat_interval_ms":2000}"#,
    );
    check(
        CoordinatorMessage::Assign {
            attempt: A,
            spec: spec(),
            resume: Some("checkpoint-0000000010.ckpt".into()),
            group: None,
            paused: false,
            lr_changes: Vec::new(),
        },
        r#"{"type":"assign","job_id":7,"attempt":2,"spec":SPEC,"resume":"checkpoint-0000000010.ckpt"}"#,
    );
    check(
        CoordinatorMessage::Assign {
            attempt: A,
            spec: spec(),
            resume: None,
            group: None,
            paused: false,
            lr_changes: Vec::new(),
        },
        r#"{"type":"assign","job_id":7,"attempt":2,"spec":SPEC}"#,
    );
    check(
        CoordinatorMessage::Assign {
            attempt: A,
            spec: spec(),
            resume: None,
            group: Some(Group {
                rank: 1,
                world: 2,
                peers: vec!["10.0.0.1:7070".into(), "10.0.0.2:7070".into()],
                workers: vec!["w1".into(), "w2".into()],
                secret: "s3cret".into(),
            }),
            paused: false,
            lr_changes: Vec::new(),
        },
        r#"{"type":"assign","job_id":7,"attempt":2,"spec":SPEC,"group":{"rank":1,"world":2,"peers":["10.0.0.1:7070","10.0.0.2:7070"],"workers":["w1","w2"],"secret":"s3cret"}}"#,
    );
    check(
        CoordinatorMessage::Cancel { attempt: A },
        r#"{"type":"cancel","job_id":7,"attempt":2}"#,
    );
    check(
        CoordinatorMessage::Goodbye {
            reason: CloseReason::Superseded,
        },
        r#"{"type":"goodbye","reason":{"reason":"superseded"}}"#,
    );
}

#[test]
fn live_control_messages() {
    check(
        CoordinatorMessage::Control {
            attempt: A,
            control: ControlAction::Pause,
        },
        r#"{"type":"control","job_id":7,"attempt":2,"control":{"action":"pause"}}"#,
    );
    for (control, json) in [
        (ControlAction::Resume, r#"{"action":"resume"}"#),
        (ControlAction::Checkpoint, r#"{"action":"checkpoint"}"#),
        (
            ControlAction::SetLr { lr: 0.5 },
            r#"{"action":"set_lr","lr":0.5}"#,
        ),
    ] {
        check(control, json);
    }
    check(
        CoordinatorMessage::Assign {
            attempt: A,
            spec: spec(),
            resume: Some("checkpoint-0000000010.ckpt".into()),
            group: None,
            paused: true,
            lr_changes: vec![LrChange { step: 5, lr: 0.25 }],
        },
        r#"{"type":"assign","job_id":7,"attempt":2,"spec":SPEC,"resume":"checkpoint-0000000010.ckpt","paused":true,"lr_changes":[{"step":5,"lr":0.25}]}"#,
    );
    check(
        JobInfo {
            paused: true,
            lr_changes: vec![LrChange { step: 5, lr: 0.25 }],
            forked_from: Some(ForkOrigin {
                job_id: 3,
                step: 40,
            }),
            ..job()
        },
        &with_spec(
            r#"{"id":7,"name":"golden","state":"running","priority":1,"created_ms":1000,"started_ms":2000,"attempts":2,"max_attempts":3,"worker_id":"w1","step":10,"total_steps":100,"spec":SPEC,"revision":41,"paused":true,"lr_changes":[{"step":5,"lr":0.25}],"forked_from":{"job_id":3,"step":40}}"#,
        ),
    );
    check(
        ForkJob {
            step: Some(40),
            spec: None,
            tags: vec!["fork".into()],
        },
        r#"{"step":40,"tags":["fork"]}"#,
    );
    assert!(serde_json::from_str::<ForkJob>(r#"{"stp":40}"#).is_err());
    // Validation names the field; lr_at picks the last change at or before the step.
    let e = ControlAction::SetLr { lr: -1.0 }.validate().unwrap_err();
    assert_eq!((e.field.as_str(), e.value.as_str()), ("lr", "-1"));
    assert!(ControlAction::SetLr { lr: f64::NAN }.validate().is_err());
    assert!(ControlAction::Pause.validate().is_ok());
    let changes = [
        LrChange { step: 10, lr: 0.5 },
        LrChange { step: 20, lr: 0.25 },
    ];
    assert_eq!(lr_at(&changes, 9, 1.0), 1.0);
    assert_eq!(lr_at(&changes, 10, 1.0), 0.5);
    assert_eq!(lr_at(&changes, 19, 1.0), 0.5);
    assert_eq!(lr_at(&changes, 25, 1.0), 0.25);
}

#[test]
fn close_reasons() {
    let cases = [
        (
            CloseReason::ProtocolVersion {
                expected: 1,
                got: 2,
            },
            r#"{"reason":"protocol_version","expected":1,"got":2}"#,
            4001,
        ),
        (
            CloseReason::BadMessage {
                message: "no".into(),
            },
            r#"{"reason":"bad_message","message":"no"}"#,
            4002,
        ),
        (CloseReason::Superseded, r#"{"reason":"superseded"}"#, 4003),
        (
            CloseReason::ShuttingDown,
            r#"{"reason":"shutting_down"}"#,
            4004,
        ),
        (
            CloseReason::FrameTooLarge { max_bytes: 1024 },
            r#"{"reason":"frame_too_large","max_bytes":1024}"#,
            1009,
        ),
    ];
    for (reason, json, code) in cases {
        assert_eq!(reason.code(), code, "{reason:?}");
        check(reason, json);
    }
}

#[test]
fn client_messages() {
    check(
        ClientMessage::Hello {
            protocol_version: 1,
        },
        r#"{"type":"hello","protocol_version":1}"#,
    );
    check(
        ClientMessage::Subscribe { job_id: 7 },
        r#"{"type":"subscribe","job_id":7}"#,
    );
    check(
        ClientMessage::Unsubscribe { job_id: 7 },
        r#"{"type":"unsubscribe","job_id":7}"#,
    );
}

#[test]
fn server_events() {
    check(
        ServerEvent::Welcome {
            protocol_version: 1,
        },
        r#"{"type":"welcome","protocol_version":1}"#,
    );
    check(
        ServerEvent::Job { job: job() },
        r#"{"type":"job","job":{"id":7,"name":"golden","state":"running","priority":1,"created_ms":1000,"started_ms":2000,"attempts":2,"max_attempts":3,"worker_id":"w1","step":10,"total_steps":100,"spec":SPEC,"revision":41}}"#,
    );
    check(
        ServerEvent::Metrics {
            job_id: 7,
            points: vec![MetricPoint {
                attempt: 2,
                metric: metric(),
            }],
        },
        r#"{"type":"metrics","job_id":7,"points":[{"attempt":2,"step":10,"epoch":0.5,"split":"train","loss":1.25,"accuracy":0.5}]}"#,
    );
    check(
        ServerEvent::Logs {
            job_id: 7,
            lines: vec![LogLine {
                ts_ms: 5,
                text: "hi".into(),
            }],
        },
        r#"{"type":"logs","job_id":7,"lines":[{"ts_ms":5,"text":"hi"}]}"#,
    );
    check(
        ServerEvent::Worker { worker: worker() },
        &format!(
            r#"{{"type":"worker","worker":{{"id":"w1","name":"box","capabilities":{CAPS},"connected":true,"draining":false,"last_seen_ms":3000,"running":{{"job_id":7,"attempt":2}},"revision":42}}}}"#
        ),
    );
    check(
        ServerEvent::Goodbye {
            reason: CloseReason::ShuttingDown,
        },
        r#"{"type":"goodbye","reason":{"reason":"shutting_down"}}"#,
    );
}

#[test]
fn rest_types() {
    check(
        AttemptInfo {
            job_id: 7,
            attempt: 2,
            worker_id: "w1".into(),
            state: JobState::Failed,
            started_ms: 1,
            finished_ms: Some(2),
            resumed_from_step: Some(10),
            error: Some("worker lost".into()),
            ranks: Vec::new(),
        },
        r#"{"job_id":7,"attempt":2,"worker_id":"w1","state":"failed","started_ms":1,"finished_ms":2,"resumed_from_step":10,"error":"worker lost"}"#,
    );
    check(
        AttemptInfo {
            job_id: 7,
            attempt: 3,
            worker_id: "w1".into(),
            state: JobState::Running,
            started_ms: 1,
            finished_ms: None,
            resumed_from_step: None,
            error: None,
            ranks: vec![
                AttemptRank {
                    rank: 0,
                    worker_id: "w1".into(),
                },
                AttemptRank {
                    rank: 1,
                    worker_id: "w2".into(),
                },
            ],
        },
        r#"{"job_id":7,"attempt":3,"worker_id":"w1","state":"running","started_ms":1,"ranks":[{"rank":0,"worker_id":"w1"},{"rank":1,"worker_id":"w2"}]}"#,
    );
    check(
        ArtifactInfo {
            name: "model.bpk".into(),
            size: 3,
            created_ms: 4,
        },
        r#"{"name":"model.bpk","size":3,"created_ms":4}"#,
    );
    check(
        LogEntry {
            seq: 9,
            line: LogLine {
                ts_ms: 5,
                text: "hi".into(),
            },
        },
        r#"{"seq":9,"ts_ms":5,"text":"hi"}"#,
    );
    check(
        SubmitJob {
            spec: spec(),
            group: Some("sweep-1".into()),
            tags: Vec::new(),
        },
        r#"{"spec":SPEC,"group":"sweep-1"}"#,
    );
    check(
        JobPage {
            jobs: vec![],
            total: 0,
            revision: 9,
        },
        r#"{"jobs":[],"total":0,"revision":9}"#,
    );
    check(
        Health {
            status: "ok".into(),
            version: "0.1.0".into(),
        },
        r#"{"status":"ok","version":"0.1.0"}"#,
    );
    check(
        ApiErrorBody {
            error: "bad".into(),
            fields: vec![FieldError {
                field: "training.batch_size".into(),
                value: "0".into(),
                allowed: "1 to 65536".into(),
            }],
        },
        r#"{"error":"bad","fields":[{"field":"training.batch_size","value":"0","allowed":"1 to 65536"}]}"#,
    );
    check(
        ApiErrorBody {
            error: "bad".into(),
            fields: vec![],
        },
        r#"{"error":"bad"}"#,
    );
}

#[test]
fn share_types() {
    let share = ShareInfo {
        id: 3,
        job_id: 7,
        hint: "a1b2c3".into(),
        created_ms: 1000,
        revoked_ms: None,
        with_data: false,
    };
    check(
        share.clone(),
        r#"{"id":3,"job_id":7,"hint":"a1b2c3","created_ms":1000,"with_data":false}"#,
    );
    // A link stored before `with_data` existed reads as one without data.
    assert_eq!(
        serde_json::from_str::<ShareInfo>(
            r#"{"id":3,"job_id":7,"hint":"a1b2c3","created_ms":1000}"#
        )
        .expect("old share"),
        share
    );
    check(CreateShare { with_data: true }, r#"{"with_data":true}"#);
    check(
        ShareInfo {
            revoked_ms: Some(2000),
            ..share.clone()
        },
        r#"{"id":3,"job_id":7,"hint":"a1b2c3","created_ms":1000,"revoked_ms":2000,"with_data":false}"#,
    );
    let token = format!("{}a1b2c3", "0".repeat(58));
    check(
        NewShare {
            share,
            token: token.clone(),
            path: format!("/s/{token}"),
        },
        &format!(
            r#"{{"share":{{"id":3,"job_id":7,"hint":"a1b2c3","created_ms":1000,"with_data":false}},"token":"{token}","path":"/s/{token}"}}"#
        ),
    );
    check(
        SharedRun::new(job(), true),
        r#"{"job":{"id":7,"name":"golden","state":"running","priority":1,"created_ms":1000,"started_ms":2000,"attempts":2,"max_attempts":3,"step":10,"total_steps":100,"spec":SPEC,"revision":41},"with_data":true}"#,
    );
}

#[test]
fn job_states_parse_and_print() {
    for state in JobState::ALL {
        assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        assert_eq!(
            serde_json::to_string(&state).expect("serializes"),
            format!("\"{}\"", state.as_str())
        );
    }
    let err = "done".parse::<JobState>().expect_err("unknown state");
    assert!(err.contains("allowed"), "{err}");
}

#[test]
fn job_notes_and_tags_are_additive_fields() {
    // Left out when empty, so older answers and clients read the same.
    let plain = serde_json::to_value(job()).expect("json");
    assert!(plain.get("notes").is_none() && plain.get("tags").is_none());
    let tagged = JobInfo {
        notes: "lr too high?".into(),
        tags: vec!["baseline".into()],
        ..job()
    };
    let text = serde_json::to_string(&tagged).expect("json");
    assert!(
        text.contains(r#""notes":"lr too high?","tags":["baseline"]"#),
        "{text}"
    );
    assert_eq!(
        serde_json::from_str::<JobInfo>(&text).expect("parse"),
        tagged
    );
    // A share shows neither.
    let shared = SharedRun::new(tagged, false);
    assert!(shared.job.notes.is_empty() && shared.job.tags.is_empty());
}

#[test]
fn job_patches_are_normalized_or_every_problem_named() {
    let patch = JobPatch {
        notes: Some("first try  \n".into()),
        tags: Some(vec![
            " baseline ".into(),
            "lr:1e-3".into(),
            "baseline".into(),
        ]),
    };
    assert_eq!(
        patch.normalized(),
        Ok(JobPatch {
            notes: Some("first try".into()),
            tags: Some(vec!["baseline".into(), "lr:1e-3".into()]),
        })
    );
    let bad = JobPatch {
        notes: Some("x".repeat(MAX_NOTES_LEN + 1)),
        tags: Some(vec!["ok".into(), "has space".into(), String::new()]),
    }
    .normalized()
    .expect_err("bad");
    let fields: Vec<&str> = bad.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["notes", "tags[1]", "tags[2]"]);
    assert_eq!(bad[1].value, "has space");
    assert!(bad[1].allowed.contains("A-Z"), "{}", bad[1].allowed);
    let many = JobPatch {
        notes: None,
        tags: Some((0..=MAX_TAGS).map(|i| format!("t{i}")).collect()),
    };
    assert_eq!(many.normalized().expect_err("too many")[0].field, "tags");
    // Unknown fields are refused, an empty patch is fine.
    assert!(serde_json::from_str::<JobPatch>(r#"{"tag":["x"]}"#).is_err());
    assert_eq!(
        serde_json::from_str::<JobPatch>("{}")
            .expect("empty")
            .normalized(),
        Ok(JobPatch::default())
    );
}

#[test]
fn revisions_default_to_zero_for_answers_of_older_coordinators() {
    let mut json = serde_json::to_value(job()).expect("json");
    json.as_object_mut().expect("object").remove("revision");
    let old: JobInfo = serde_json::from_value(json).expect("parses without a revision");
    assert_eq!(
        old,
        JobInfo {
            revision: 0,
            ..job()
        }
    );
    let mut json = serde_json::to_value(worker()).expect("json");
    json.as_object_mut().expect("object").remove("revision");
    let old: WorkerInfo = serde_json::from_value(json).expect("parses without a revision");
    assert_eq!(old.revision, 0);
    let page: JobPage = serde_json::from_str(r#"{"jobs":[],"total":0}"#).expect("old page");
    assert_eq!(page.revision, 0);
}

#[test]
fn controlled_log_lines_read_back_to_their_step() {
    for action in [
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Checkpoint,
        ControlAction::SetLr { lr: 0.0005 },
    ] {
        let line = action.log_line(41);
        assert_eq!(controlled_step(&line), Some(41), "{line}");
    }
    assert_eq!(
        ControlAction::SetLr { lr: 0.5 }.log_line(3),
        "learning rate 0.5 from step 4"
    );
    for other in [
        "loading dataset (synthetic)",
        "paused after step x",
        "learning rate 0.5 from step 0",
        "learning rate fast from step 4",
        "checkpoint at step 5",
    ] {
        assert_eq!(controlled_step(other), None, "{other}");
    }
}
