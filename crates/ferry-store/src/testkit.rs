//! The store conformance suite: what every [`Store`] implementation must do, as async functions
//! that take any `&dyn Store`. This crate runs [`run_all`] on SQLite and on PostgreSQL; other
//! crates can run it on their own implementations (fakes included).
//!
//! Each check returns `Err` when the store itself fails and **panics** (through `assert!`) when
//! the store answers wrongly, like any test. Checks use fresh random names, so they can share a
//! store with other data, but [`purge_executions`] expects that nothing else wrote completed
//! executions that ended before 1970-01-01T00:00:03Z (it checks the exact count).

use ferry_core::{
    Application, Execution, ExecutionFilter, PausedDetails, RestartDetails, StageExecution, Status,
    Store, StoreError, StoreResult, TaskExecution, Trigger, parse_pipeline,
};
use serde_json::{Map, Value, json};

/// Every check, in order.
pub async fn run_all(store: &dyn Store) -> StoreResult<()> {
    applications(store).await?;
    pipeline_versions(store).await?;
    pipeline_renames(store).await?;
    documents(store).await?;
    execution_round_trip(store).await?;
    update_writes_only_given_stages(store).await?;
    ack_is_atomic_with_the_write(store).await?;
    batch_is_all_or_nothing(store).await?;
    list_executions(store).await?;
    incomplete_executions(store).await?;
    purge_executions(store).await?;
    queue(store).await?;
    probe(store).await?;
    Ok(())
}

/// A fresh name: `prefix-` and 8 random hex digits (a valid application name for a valid prefix).
pub fn unique(prefix: &str) -> String {
    let id = ferry_core::new_random_id().replace('-', "");
    format!("{prefix}-{}", id.get(..8).unwrap_or(&id))
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A realistic execution of pipeline `pipeline_id` in `application`: a manual trigger with
/// parameters and extra fields, pause details, and three stages (deploy → wait → judgment) with
/// contexts, outputs, tasks, messages and restart details. Running, created at `build_time`.
pub fn sample_execution(
    application: &str,
    pipeline_id: &str,
    id: &str,
    build_time: i64,
) -> Execution {
    let doc = json!({
        "application": application,
        "name": "deploy to prod",
        "limitConcurrent": true,
        "stages": [
            {"refId": "1", "type": "deployManifest", "name": "Deploy",
             "account": "prod", "manifests": [{"kind": "Deployment", "spec": {"replicas": 3}}]},
            {"refId": "2", "type": "wait", "requisiteStageRefIds": ["1"], "waitTime": 30,
             "stageTimeoutMs": 60000, "failPipeline": false, "continuePipeline": true},
            {"refId": "3", "type": "manualJudgment", "requisiteStageRefIds": ["2"],
             "stageEnabled": {"type": "expression", "expression": "${parameters.env == 'prod'}"},
             "judgmentInputs": [{"value": "go"}, {"value": "stop"}]}
        ]
    });
    let (pipeline, problems) = parse_pipeline(&doc);
    assert!(problems.is_empty(), "sample pipeline: {problems:?}");
    let stage = |i: usize| -> StageExecution {
        let def = &pipeline.stages[i];
        StageExecution {
            id: format!("{id}-{}", def.ref_id),
            ref_id: def.ref_id.clone(),
            stage_type: def.stage_type.clone(),
            name: def.name.clone(),
            requisite_stage_ref_ids: def.requisite_stage_ref_ids.clone(),
            status: Status::NotStarted,
            context: def.context.clone(),
            outputs: Map::new(),
            tasks: vec![],
            start_time: None,
            end_time: None,
            messages: vec![],
            restart_details: None,
            attempt: 0,
            evaluated: false,
            paused_ms: 0,
        }
    };
    let mut deploy = stage(0);
    deploy.status = Status::Succeeded;
    deploy.start_time = Some(build_time + 10);
    deploy.end_time = Some(build_time + 2_000);
    deploy.attempt = 1;
    deploy.evaluated = true;
    deploy.context.insert(
        "deploy.server.groups".into(),
        json!({"prod": ["shop-v042"]}),
    );
    deploy.outputs = obj(json!({
        "manifests": [{"kind": "Deployment", "metadata": {"name": "shop"}}],
        "ratio": 0.1, "tiny": 1.5e-7, "big": 12345678901234_i64, "ok": true, "none": null
    }));
    deploy.tasks = vec![
        TaskExecution {
            id: "1".into(),
            name: "deployManifest".into(),
            status: Status::Succeeded,
            start_time: Some(build_time + 10),
            end_time: Some(build_time + 1_000),
        },
        TaskExecution {
            id: "2".into(),
            name: "waitForManifestStable".into(),
            status: Status::Succeeded,
            start_time: Some(build_time + 1_000),
            end_time: Some(build_time + 2_000),
        },
    ];
    let mut wait = stage(1);
    wait.status = Status::Running;
    wait.start_time = Some(build_time + 2_001);
    wait.attempt = 2;
    wait.evaluated = true;
    wait.paused_ms = 100;
    wait.context
        .insert("startTime".into(), json!(build_time + 2_001));
    wait.messages = vec!["expression `${trigger.x}` is undefined; left as written".into()];
    wait.restart_details = Some(RestartDetails {
        restarted_by: "ann@example.com".into(),
        restart_time: build_time + 2_000,
        previous_exception: Some(json!({"details": {"errors": ["timed out"]}, "type": "timeout"})),
    });
    wait.tasks = vec![TaskExecution {
        id: "1".into(),
        name: "wait".into(),
        status: Status::Running,
        start_time: Some(build_time + 2_001),
        end_time: None,
    }];
    let judge = stage(2);
    Execution {
        id: id.to_string(),
        execution_type: "PIPELINE".into(),
        application: application.to_string(),
        pipeline_config_id: pipeline_id.to_string(),
        name: pipeline.name.clone(),
        pipeline_version: 3,
        status: Status::Running,
        trigger: Trigger {
            trigger_type: "manual".into(),
            user: "ann@example.com".into(),
            parameters: obj(json!({"env": "prod", "replicas": 3, "dryRun": false})),
            extra: obj(json!({
                "correlationId": format!("corr-{id}"),
                "artifacts": [{"type": "docker/image", "reference": "shop:1.2.3"}]
            })),
        },
        build_time,
        start_time: Some(build_time + 5),
        end_time: None,
        canceled: false,
        canceled_by: None,
        cancellation_reason: None,
        paused: Some(PausedDetails {
            paused_by: "bob".into(),
            pause_time: build_time + 1_500,
            resumed_by: Some("bob".into()),
            resume_time: Some(build_time + 1_600),
        }),
        limit_concurrent: pipeline.limit_concurrent,
        max_concurrent_executions: 2,
        keep_waiting_pipelines: true,
        stage_defs: pipeline.stages,
        stages: vec![deploy, wait, judge],
    }
}

/// A sample execution with the given status and times (complete statuses get an end time).
fn execution_with(
    application: &str,
    pipeline_id: &str,
    id: &str,
    status: Status,
    build_time: i64,
    end_time: Option<i64>,
) -> Execution {
    let mut e = sample_execution(application, pipeline_id, id, build_time);
    e.status = status;
    e.end_time = end_time;
    e
}

fn is_conflict<T: std::fmt::Debug>(r: &StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

/// Application create, read, update (creation time kept), list order, and delete refused while
/// pipelines exist.
pub async fn applications(store: &dyn Store) -> StoreResult<()> {
    let name = unique("kit-app");
    let app = Application {
        name: name.clone(),
        email: Some("team@example.com".into()),
        description: Some("the shop".into()),
        owners: vec!["ann".into(), "bob".into()],
        created_at: 0,
        updated_at: 0,
    };
    let created = store.put_application(&app).await?;
    assert!(created.created_at > 0, "{created:?}");
    assert_eq!(created.updated_at, created.created_at);
    assert_eq!(
        Application {
            created_at: 0,
            updated_at: 0,
            ..created.clone()
        },
        app
    );
    assert_eq!(store.get_application(&name).await?, Some(created.clone()));

    let changed = Application {
        description: None,
        owners: vec!["carol".into()],
        ..app.clone()
    };
    let updated = store.put_application(&changed).await?;
    assert_eq!(
        updated.created_at, created.created_at,
        "creation time is kept"
    );
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(updated.owners, vec!["carol".to_string()]);
    assert_eq!(updated.description, None);
    assert_eq!(store.get_application(&name).await?, Some(updated.clone()));

    let other = Application {
        name: format!("{name}-b"),
        email: None,
        description: None,
        owners: vec![],
        created_at: 0,
        updated_at: 0,
    };
    let other = store.put_application(&other).await?;
    let all = store.list_applications().await?;
    let names: Vec<&str> = all.iter().map(|a| a.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "listed by name");
    let mine: Vec<&Application> = all.iter().filter(|a| a.name.starts_with(&name)).collect();
    assert_eq!(mine, vec![&updated, &other]);
    assert_eq!(store.get_application(&unique("kit-none")).await?, None);

    // A pipeline blocks deletion.
    let (pipeline, problems) =
        parse_pipeline(&json!({"application": name, "name": "p", "stages": []}));
    assert!(problems.is_empty(), "{problems:?}");
    let record = store.save_pipeline(&pipeline, "ann").await?;
    let refused = store.delete_application(&name).await;
    assert!(is_conflict(&refused), "{refused:?}");
    assert_eq!(store.get_application(&name).await?, Some(updated));
    assert!(store.delete_pipeline(&record.id).await?);
    assert!(store.delete_application(&name).await?);
    assert_eq!(store.get_application(&name).await?, None);
    assert!(!store.delete_application(&name).await?, "already gone");
    assert!(store.delete_application(&other.name).await?);
    Ok(())
}

fn with_id(doc: &Value, id: &str) -> Value {
    let mut doc = doc.clone();
    if let Value::Object(m) = &mut doc {
        m.insert("id".into(), Value::String(id.to_string()));
    }
    doc
}

fn pipeline_doc(app: &str, name: &str, wait: u64) -> Value {
    json!({
        "application": app,
        "name": name,
        "limitConcurrent": true,
        "parameterConfig": [{"name": "env", "default": "staging"}],
        "stages": [
            {"refId": "1", "type": "wait", "waitTime": wait},
            {"refId": "2", "type": "wait", "requisiteStageRefIds": ["1"], "waitTime": 1}
        ]
    })
}

fn save_doc(doc: &Value) -> ferry_core::Pipeline {
    let (pipeline, problems) = parse_pipeline(doc);
    assert!(problems.is_empty(), "{problems:?}");
    pipeline
}

/// Versioning: a new version only when the document changed (key order is not a change), history
/// newest first with who and when, lookups by id and by name, listing order, delete.
pub async fn pipeline_versions(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-pipes");
    let doc_a = pipeline_doc(&app, "deploy", 10);
    let doc_b = pipeline_doc(&app, "deploy", 20);

    let v1 = store.save_pipeline(&save_doc(&doc_a), "alice").await?;
    assert!(!v1.id.is_empty());
    assert_eq!(
        (v1.application.as_str(), v1.name.as_str(), v1.version),
        (app.as_str(), "deploy", 1)
    );
    assert_eq!(v1.spec, with_id(&doc_a, &v1.id), "the spec carries its id");
    assert_eq!(v1.spec["id"], json!(v1.id));
    assert_eq!(v1.updated_by, "alice");
    assert!(v1.updated_at > 0);

    // Save 2: same document (no id given): same id, no new version.
    let same = store.save_pipeline(&save_doc(&doc_a), "bob").await?;
    assert_eq!(
        same, v1,
        "unchanged document: the stored version is returned"
    );
    // Key order alone is not a change.
    let reversed: Map<String, Value> = match &doc_a {
        Value::Object(src) => src
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        _ => Map::new(),
    };
    let again = store
        .save_pipeline(&save_doc(&Value::Object(reversed)), "bob")
        .await?;
    assert_eq!(again.version, 1, "reordered keys are the same document");

    // Save 3: a change, by another user.
    let v2 = store.save_pipeline(&save_doc(&doc_b), "carol").await?;
    assert_eq!(v2.id, v1.id, "same application and name: same pipeline");
    assert_eq!(v2.version, 2);
    assert_eq!(v2.updated_by, "carol");
    assert!(v2.updated_at >= v1.updated_at);
    assert_eq!(v2.spec, with_id(&doc_b, &v1.id));

    let history = store.pipeline_history(&v1.id).await?;
    assert_eq!(
        history,
        vec![v2.clone(), v1.clone()],
        "two versions, newest first"
    );

    assert_eq!(store.get_pipeline(&v1.id).await?, Some(v2.clone()));
    assert_eq!(store.find_pipeline(&app, "deploy").await?, Some(v2.clone()));
    assert_eq!(store.find_pipeline(&app, "nope").await?, None);
    assert_eq!(store.get_pipeline("no-such-id").await?, None);

    // A save naming the id explicitly.
    let mut explicit = save_doc(&pipeline_doc(&app, "deploy", 30));
    explicit.id = v1.id.clone();
    let v3 = store.save_pipeline(&explicit, "dave").await?;
    assert_eq!((v3.id.as_str(), v3.version), (v1.id.as_str(), 3));

    let build = store
        .save_pipeline(&save_doc(&pipeline_doc(&app, "build", 1)), "alice")
        .await?;
    assert_ne!(build.id, v1.id);
    assert_eq!(
        store.list_pipelines(Some(&app)).await?,
        vec![build.clone(), v3.clone()]
    );
    let everything = store.list_pipelines(None).await?;
    assert!(everything.contains(&build) && everything.contains(&v3));
    let keys: Vec<(&str, &str)> = everything
        .iter()
        .map(|r| (r.application.as_str(), r.name.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "listed by application, then name");

    assert!(store.delete_pipeline(&v1.id).await?);
    assert_eq!(store.get_pipeline(&v1.id).await?, None);
    assert!(store.pipeline_history(&v1.id).await?.is_empty());
    assert!(!store.delete_pipeline(&v1.id).await?);
    assert_eq!(store.list_pipelines(Some(&app)).await?, vec![build.clone()]);
    assert!(store.delete_pipeline(&build.id).await?);
    Ok(())
}

/// Renames keep the id and add a version; a name held by another id is a conflict.
pub async fn pipeline_renames(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-rename");
    let deploy = store
        .save_pipeline(&save_doc(&pipeline_doc(&app, "deploy", 1)), "ann")
        .await?;
    let build = store
        .save_pipeline(&save_doc(&pipeline_doc(&app, "build", 1)), "ann")
        .await?;

    let mut renamed = save_doc(&pipeline_doc(&app, "release", 1));
    renamed.id = deploy.id.clone();
    let release = store.save_pipeline(&renamed, "bob").await?;
    assert_eq!(
        (release.id.as_str(), release.version),
        (deploy.id.as_str(), 2)
    );
    assert_eq!(release.name, "release");
    assert_eq!(store.find_pipeline(&app, "deploy").await?, None);
    assert_eq!(
        store.find_pipeline(&app, "release").await?,
        Some(release.clone())
    );
    let history = store.pipeline_history(&deploy.id).await?;
    let names: Vec<&str> = history.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["release", "deploy"],
        "each version keeps its name"
    );

    // Renaming "build" onto "release" (another id) is refused and changes nothing.
    let mut clash = save_doc(&pipeline_doc(&app, "release", 5));
    clash.id = build.id.clone();
    let refused = store.save_pipeline(&clash, "carol").await;
    assert!(is_conflict(&refused), "{refused:?}");
    assert_eq!(store.get_pipeline(&build.id).await?, Some(build.clone()));
    assert_eq!(store.get_pipeline(&deploy.id).await?, Some(release.clone()));

    // A new explicit id cannot take a name either.
    let mut squatter = save_doc(&pipeline_doc(&app, "release", 9));
    squatter.id = ferry_core::new_random_id();
    let refused = store.save_pipeline(&squatter, "carol").await;
    assert!(is_conflict(&refused), "{refused:?}");
    assert_eq!(store.get_pipeline(&squatter.id).await?, None);

    // Without an id, the name finds its pipeline.
    let by_name = store
        .save_pipeline(&save_doc(&pipeline_doc(&app, "release", 9)), "dave")
        .await?;
    assert_eq!(
        (by_name.id.as_str(), by_name.version),
        (deploy.id.as_str(), 3)
    );

    // The same name in another application is another pipeline.
    let elsewhere = store
        .save_pipeline(
            &save_doc(&pipeline_doc(&format!("{app}-2"), "release", 9)),
            "dave",
        )
        .await?;
    assert_ne!(elsewhere.id, deploy.id);
    assert_eq!(elsewhere.version, 1);

    for id in [&deploy.id, &build.id, &elsewhere.id] {
        assert!(store.delete_pipeline(id).await?);
    }
    Ok(())
}

/// An execution reads back equal to what was written; a second create with the same id is a
/// conflict; an unknown id reads as `None`.
pub async fn execution_round_trip(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-exec");
    let e = sample_execution(
        &app,
        "pipe-1",
        &ferry_core::new_time_id(),
        1_700_000_000_000,
    );
    store.create_execution(&e, None).await?;
    let read = store.get_execution(&e.id).await?;
    assert_eq!(read.as_ref(), Some(&e), "round trip");
    // Also equal as JSON text: key order is kept.
    assert_eq!(
        serde_json::to_string(&read).ok(),
        serde_json::to_string(&Some(&e)).ok()
    );

    let again = store.create_execution(&e, None).await;
    assert!(is_conflict(&again), "{again:?}");
    assert_eq!(store.get_execution(&e.id).await?, Some(e));
    assert_eq!(store.get_execution("no-such-execution").await?, None);

    let empty = Execution {
        id: ferry_core::new_time_id(),
        stages: vec![],
        stage_defs: vec![],
        paused: None,
        start_time: None,
        ..sample_execution(&app, "pipe-1", "x", 1_700_000_000_001)
    };
    store.create_execution(&empty, None).await?;
    assert_eq!(store.get_execution(&empty.id).await?, Some(empty));
    Ok(())
}

/// `update_execution` writes the header and only the stages at the given indexes.
pub async fn update_writes_only_given_stages(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-update");
    let original = sample_execution(
        &app,
        "pipe-1",
        &ferry_core::new_time_id(),
        1_700_000_000_000,
    );
    store.create_execution(&original, None).await?;

    let mut changed = original.clone();
    changed.status = Status::Paused;
    changed.canceled = true;
    changed.canceled_by = Some("carol".into());
    changed.cancellation_reason = Some("wrong build".into());
    changed.end_time = Some(1_700_000_009_000);
    changed.stages[0]
        .context
        .insert("changedInMemoryOnly".into(), json!(true));
    changed.stages[0].status = Status::Terminal;
    changed.stages[1].status = Status::Succeeded;
    changed.stages[1].end_time = Some(1_700_000_008_000);
    changed.stages[1]
        .outputs
        .insert("waited".into(), json!(30.5));
    changed.stages[1].tasks[0].status = Status::Succeeded;

    store.update_execution(&changed, &[1], None).await?;
    let read = store.get_execution(&original.id).await?;
    let mut expected = changed.clone();
    expected.stages[0] = original.stages[0].clone();
    assert_eq!(
        read.as_ref(),
        Some(&expected),
        "header and stage 1 written, stage 0 not"
    );
    let read = read.unwrap_or(expected);
    assert_eq!(
        read.stages[0], original.stages[0],
        "stage 0 was not passed: unchanged"
    );
    assert_eq!(read.stages[1], changed.stages[1]);
    assert_eq!(read.stages[2], original.stages[2]);

    store.update_execution(&changed, &[0, 2], None).await?;
    assert_eq!(
        store.get_execution(&original.id).await?,
        Some(changed.clone())
    );

    // A header-only update touches no stage.
    let mut header_only = changed.clone();
    header_only.status = Status::Running;
    header_only.stages[2].status = Status::Running;
    store.update_execution(&header_only, &[], None).await?;
    let mut expected = header_only.clone();
    expected.stages[2] = changed.stages[2].clone();
    assert_eq!(
        store.get_execution(&original.id).await?,
        Some(expected.clone())
    );

    // An index past the end is refused and writes nothing.
    let mut bad = expected.clone();
    bad.status = Status::Succeeded;
    let refused = store.update_execution(&bad, &[0, 3], None).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(store.get_execution(&original.id).await?, Some(expected));
    Ok(())
}

/// The acknowledged command leaves the queue in the same transaction as the write: when the write
/// fails, the command stays.
pub async fn ack_is_atomic_with_the_write(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-ack");
    let e = sample_execution(
        &app,
        "pipe-1",
        &ferry_core::new_time_id(),
        1_700_000_000_000,
    );
    let pending_ids = |cmds: Vec<ferry_core::QueuedCommand>| -> Vec<i64> {
        cmds.into_iter()
            .filter(|c| c.execution_id == e.id)
            .map(|c| c.id)
            .collect()
    };

    let start = store.enqueue(&e.id, &json!({"type": "start"})).await?;
    store.create_execution(&e, Some(start)).await?;
    assert!(
        pending_ids(store.pending_commands(10_000).await?).is_empty(),
        "acked by create"
    );

    let cmd = store.enqueue(&e.id, &json!({"type": "resume"})).await?;
    // A failing write (no such execution) must not consume the command.
    let ghost = Execution {
        id: format!("{}-ghost", e.id),
        ..e.clone()
    };
    let failed = store.update_execution(&ghost, &[0], Some(cmd)).await;
    assert!(is_conflict(&failed), "{failed:?}");
    assert_eq!(store.get_execution(&ghost.id).await?, None);
    assert_eq!(
        pending_ids(store.pending_commands(10_000).await?),
        vec![cmd]
    );

    let mut running = e.clone();
    running.stages[2].status = Status::Running;
    store.update_execution(&running, &[2], Some(cmd)).await?;
    assert!(pending_ids(store.pending_commands(10_000).await?).is_empty());
    assert_eq!(store.get_execution(&e.id).await?, Some(running.clone()));

    // A failing create keeps its command too.
    let dup = store.enqueue(&e.id, &json!({"type": "start"})).await?;
    let failed = store.create_execution(&e, Some(dup)).await;
    assert!(is_conflict(&failed), "{failed:?}");
    assert_eq!(
        pending_ids(store.pending_commands(10_000).await?),
        vec![dup]
    );
    assert_eq!(store.get_execution(&e.id).await?, Some(running));
    store.ack(dup).await?;
    assert!(pending_ids(store.pending_commands(10_000).await?).is_empty());
    Ok(())
}

/// Listing: filters by application, pipeline and statuses; newest first (ties by id, newest
/// first); the limit and its default; summaries equal [`Execution::summary`].
/// A batch ([`Store::write_executions`]) is one transaction: one bad write undoes the others.
pub async fn batch_is_all_or_nothing(store: &dyn Store) -> StoreResult<()> {
    use ferry_core::ExecutionWrite;
    let app = unique("kit-batch");
    let a = sample_execution(
        &app,
        "pipe-b",
        &ferry_core::new_time_id(),
        1_700_000_000_100,
    );
    let b = sample_execution(
        &app,
        "pipe-b",
        &ferry_core::new_time_id(),
        1_700_000_000_200,
    );
    let cmd = store.enqueue(&a.id, &json!({"type": "x"})).await?;
    // Create a and b together, acking the command.
    store
        .write_executions(&[
            ExecutionWrite {
                execution: &a,
                create: true,
                changed_stages: &[],
                acks: &[cmd],
            },
            ExecutionWrite {
                execution: &b,
                create: true,
                changed_stages: &[],
                acks: &[],
            },
        ])
        .await?;
    assert_eq!(store.get_execution(&a.id).await?, Some(a.clone()));
    assert_eq!(store.get_execution(&b.id).await?, Some(b.clone()));
    assert!(
        store
            .pending_commands(10_000)
            .await?
            .iter()
            .all(|c| c.id != cmd)
    );
    // Update a, and update a ghost: the whole batch fails and a is unchanged.
    let mut a2 = a.clone();
    a2.stages[0].status = Status::Succeeded;
    let ghost = Execution {
        id: format!("{}-ghost", b.id),
        ..b.clone()
    };
    let failed = store
        .write_executions(&[
            ExecutionWrite {
                execution: &a2,
                create: false,
                changed_stages: &[0],
                acks: &[],
            },
            ExecutionWrite {
                execution: &ghost,
                create: false,
                changed_stages: &[0],
                acks: &[],
            },
        ])
        .await;
    assert!(is_conflict(&failed), "{failed:?}");
    assert_eq!(store.get_execution(&a.id).await?, Some(a.clone()));
    // The same update alone succeeds.
    store
        .write_executions(&[ExecutionWrite {
            execution: &a2,
            create: false,
            changed_stages: &[0],
            acks: &[],
        }])
        .await?;
    assert_eq!(store.get_execution(&a.id).await?, Some(a2));
    Ok(())
}

pub async fn list_executions(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-list");
    let (pa, pb) = (unique("pipe-a"), unique("pipe-b"));
    let t = 1_700_000_000_000;
    let specs = [
        (&pa, Status::Succeeded, t + 1_000, Some(t + 1_100)),
        (&pa, Status::Running, t + 2_000, None),
        (&pb, Status::Terminal, t + 3_000, Some(t + 3_100)),
        (&pa, Status::NotStarted, t + 4_000, None),
        (&pb, Status::Running, t + 5_000, None),
        (&pb, Status::Buffered, t + 5_000, None),
    ];
    let mut all = Vec::new();
    for (i, (pipeline, status, build, end)) in specs.into_iter().enumerate() {
        // Ids sort like creation order, as time-ordered ids do.
        let id = format!("{app}-{i}");
        let e = execution_with(&app, pipeline, &id, status, build, end);
        store.create_execution(&e, None).await?;
        all.push(e);
    }
    let summaries = |idx: &[usize]| -> Vec<ferry_core::ExecutionSummary> {
        idx.iter().map(|&i| all[i].summary()).collect()
    };
    let list =
        |application: Option<&str>, pipeline: Option<&str>, statuses: &[Status], limit: usize| {
            ExecutionFilter {
                application: application.map(str::to_string),
                pipeline_config_id: pipeline.map(str::to_string),
                statuses: statuses.to_vec(),
                limit,
            }
        };

    let by_app = store
        .list_executions(&list(Some(&app), None, &[], 0))
        .await?;
    assert_eq!(
        by_app,
        summaries(&[5, 4, 3, 2, 1, 0]),
        "newest first, ties by id"
    );
    assert_eq!(by_app[0].trigger_type, "manual");
    assert_eq!(by_app[0].user, "ann@example.com");
    assert_eq!(by_app[0].name, "deploy to prod");

    let by_pipeline = store
        .list_executions(&list(Some(&app), Some(&pa), &[], 0))
        .await?;
    assert_eq!(by_pipeline, summaries(&[3, 1, 0]));
    let pipeline_only = store
        .list_executions(&list(None, Some(&pb), &[], 0))
        .await?;
    assert_eq!(pipeline_only, summaries(&[5, 4, 2]));

    let running = store
        .list_executions(&list(Some(&app), None, &[Status::Running], 0))
        .await?;
    assert_eq!(running, summaries(&[4, 1]));
    let two = store
        .list_executions(&list(
            Some(&app),
            None,
            &[Status::Running, Status::Terminal],
            0,
        ))
        .await?;
    assert_eq!(two, summaries(&[4, 2, 1]));
    let all_filters = store
        .list_executions(&list(Some(&app), Some(&pb), &[Status::Terminal], 0))
        .await?;
    assert_eq!(all_filters, summaries(&[2]));

    let limited = store
        .list_executions(&list(Some(&app), None, &[], 2))
        .await?;
    assert_eq!(limited, summaries(&[5, 4]));
    let none = store
        .list_executions(&list(Some(&unique("kit-none")), None, &[], 0))
        .await?;
    assert!(none.is_empty());

    // An orchestration (no stored pipeline) is listed with its type; an empty pipeline id lists
    // only orchestrations.
    let mut orchestration = execution_with(&app, "", &format!("{app}-o"), Status::Running, t, None);
    orchestration.execution_type = Execution::ORCHESTRATION.into();
    store.create_execution(&orchestration, None).await?;
    let orchestrations = store
        .list_executions(&list(Some(&app), Some(""), &[], 0))
        .await?;
    assert_eq!(orchestrations, vec![orchestration.summary()]);
    assert_eq!(orchestrations[0].execution_type, "ORCHESTRATION");
    assert!(by_app.iter().all(|s| s.execution_type == "PIPELINE"));

    let everything = store.list_executions(&list(None, None, &[], 1_000)).await?;
    for s in summaries(&[0, 1, 2, 3, 4, 5]) {
        assert!(everything.contains(&s), "{s:?}");
    }
    assert!(
        everything
            .windows(2)
            .all(|w| w[0].build_time >= w[1].build_time),
        "newest first"
    );

    // The default limit is 100.
    let many = unique("kit-many");
    for i in 0..101 {
        let e = execution_with(
            &many,
            "p",
            &format!("{many}-{i:03}"),
            Status::Succeeded,
            t + i,
            Some(t + i),
        );
        store.create_execution(&e, None).await?;
    }
    let page = store
        .list_executions(&list(Some(&many), None, &[], 0))
        .await?;
    assert_eq!(page.len(), 100);
    assert_eq!(page[0].id, format!("{many}-100"));
    assert_eq!(page[99].id, format!("{many}-001"));
    Ok(())
}

/// Incomplete executions: every execution whose status is not complete, oldest first, with
/// their stages.
pub async fn incomplete_executions(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-recover");
    let t = 1_700_000_100_000;
    let mut mine = Vec::new();
    for (i, status) in Status::ALL.into_iter().enumerate() {
        let end = status.is_complete().then_some(t + 50);
        // Build times descending, so creation order is not the answer.
        let e = execution_with(
            &app,
            "p",
            &format!("{app}-{i:02}"),
            status,
            t - i as i64,
            end,
        );
        store.create_execution(&e, None).await?;
        mine.push(e);
    }
    let found = store.incomplete_executions().await?;
    assert!(
        found.iter().all(|e| !e.status.is_complete()),
        "only incomplete ones"
    );
    assert!(
        found.windows(2).all(|w| w[0].build_time <= w[1].build_time),
        "oldest first"
    );
    let got: Vec<&Execution> = found.iter().filter(|e| e.application == app).collect();
    let mut want: Vec<&Execution> = mine.iter().filter(|e| !e.status.is_complete()).collect();
    want.sort_by_key(|e| e.build_time);
    assert_eq!(
        got.len(),
        6,
        "NOT_STARTED, RUNNING, PAUSED, SUSPENDED, REDIRECT, BUFFERED"
    );
    assert_eq!(got, want, "with their stages");

    // Completing one removes it.
    let mut done = want[0].clone();
    done.status = Status::Succeeded;
    done.end_time = Some(t + 60);
    store.update_execution(&done, &[], None).await?;
    let again = store.incomplete_executions().await?;
    assert!(!again.iter().any(|e| e.id == done.id));
    assert_eq!(again.iter().filter(|e| e.application == app).count(), 5);
    Ok(())
}

/// Purge deletes completed executions that ended before the cut-off, with their stages, and
/// nothing else.
pub async fn purge_executions(store: &dyn Store) -> StoreResult<()> {
    let app = unique("kit-purge");
    let id = |n: &str| format!("{app}-{n}");
    let cases = [
        ("old-ok", Status::Succeeded, Some(1_000), true),
        ("old-canceled", Status::Canceled, Some(2_000), true),
        ("old-terminal", Status::Terminal, Some(2_999), true),
        ("at-cutoff", Status::Succeeded, Some(3_000), false),
        ("new", Status::Succeeded, Some(5_000), false),
        ("running", Status::Running, None, false),
        ("running-with-end", Status::Running, Some(100), false),
        ("paused", Status::Paused, Some(100), false),
    ];
    let mut written = Vec::new();
    for (name, status, end, _) in cases {
        let e = execution_with(&app, "p", &id(name), status, 500, end);
        store.create_execution(&e, None).await?;
        written.push(e);
    }
    assert_eq!(store.purge_executions(3_000).await?, 3);
    for ((_, _, _, purged), e) in cases.iter().zip(&written) {
        let read = store.get_execution(&e.id).await?;
        if *purged {
            assert_eq!(read, None, "{} is purged", e.id);
        } else {
            assert_eq!(read.as_ref(), Some(e), "{} is kept", e.id);
        }
    }
    // The stage rows went too: the same id can be written again.
    store.create_execution(&written[0], None).await?;
    assert_eq!(
        store.get_execution(&written[0].id).await?,
        Some(written[0].clone())
    );
    assert_eq!(store.purge_executions(3_000).await?, 1);
    assert_eq!(store.purge_executions(3_000).await?, 0);
    Ok(())
}

/// The command queue: ids in arrival order, oldest first, limit, payload round trip, ack.
pub async fn queue(store: &dyn Store) -> StoreResult<()> {
    let execution = unique("kit-queue");
    let payloads = [
        json!({"type": "start", "z": 1, "a": [1, 2]}),
        json!({"type": "cancel", "user": "ann", "reason": "x"}),
        json!("plain string"),
    ];
    let mut ids = Vec::new();
    for p in &payloads {
        ids.push(store.enqueue(&execution, p).await?);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids follow arrival: {ids:?}"
    );
    let mine = |cmds: Vec<ferry_core::QueuedCommand>| -> Vec<ferry_core::QueuedCommand> {
        cmds.into_iter()
            .filter(|c| c.execution_id == execution)
            .collect()
    };
    let pending = mine(store.pending_commands(10_000).await?);
    assert_eq!(pending.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    for (c, p) in pending.iter().zip(&payloads) {
        assert_eq!(&c.payload, p);
        assert_eq!(
            serde_json::to_string(&c.payload).ok(),
            serde_json::to_string(p).ok(),
            "key order kept"
        );
        assert!(c.created_at > 0);
    }
    let all = store.pending_commands(10_000).await?;
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let first = store.pending_commands(1).await?;
    assert_eq!(first.len(), 1);
    assert_eq!(Some(&first[0]), all.first());
    assert!(store.pending_commands(0).await?.is_empty());

    store.ack(ids[1]).await?;
    store.ack(ids[1]).await?; // acking twice is harmless
    let left: Vec<i64> = mine(store.pending_commands(10_000).await?)
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, vec![ids[0], ids[2]]);
    store.ack(ids[0]).await?;
    store.ack(ids[2]).await?;
    assert!(mine(store.pending_commands(10_000).await?).is_empty());
    let next = store.enqueue(&execution, &json!(null)).await?;
    assert!(next > ids[2], "ids are never reused");
    store.ack(next).await?;
    Ok(())
}

/// The probe write succeeds repeatedly (it upserts one row).
pub async fn probe(store: &dyn Store) -> StoreResult<()> {
    for _ in 0..3 {
        let r = store.probe_write().await;
        assert!(r.is_ok(), "{r:?}");
    }
    Ok(())
}

/// Documents of other kinds: versions only on change, history newest first, get by version,
/// list shows the latest of each name, kinds are separate, delete removes every version.
pub async fn documents(store: &dyn Store) -> StoreResult<()> {
    let name = unique("kit-doc");
    let kind = "CanaryConfig";
    let a = json!({"name": name, "metrics": [{"name": "errors"}], "a": 1});
    let b = json!({"name": name, "metrics": [{"name": "latency"}], "a": 1});

    let v1 = store.save_document(kind, &name, &a, "alice").await?;
    assert_eq!((v1.version, v1.updated_by.as_str()), (1, "alice"));
    assert_eq!(v1.body, a);
    // Key order alone is not a change.
    let reordered = json!({"a": 1, "metrics": [{"name": "errors"}], "name": name});
    let same = store.save_document(kind, &name, &reordered, "bob").await?;
    assert_eq!(same, v1, "an unchanged document keeps its version");
    let v2 = store.save_document(kind, &name, &b, "bob").await?;
    assert_eq!((v2.version, v2.updated_by.as_str()), (2, "bob"));

    let latest = store.get_document(kind, &name, None).await?;
    assert_eq!(latest.as_ref().map(|d| d.version), Some(2));
    assert_eq!(latest.map(|d| d.body), Some(b.clone()));
    let first = store.get_document(kind, &name, Some(1)).await?;
    assert_eq!(first.map(|d| d.body), Some(a.clone()));
    assert_eq!(store.get_document(kind, &name, Some(9)).await?, None);
    assert_eq!(
        store.get_document("Other", &name, None).await?,
        None,
        "kinds are separate"
    );

    let history = store.document_history(kind, &name).await?;
    assert_eq!(
        history.iter().map(|d| d.version).collect::<Vec<_>>(),
        vec![2, 1]
    );
    let other = format!("{name}-z");
    store.save_document(kind, &other, &a, "carol").await?;
    let listed: Vec<(String, i64)> = store
        .list_documents(kind)
        .await?
        .into_iter()
        .filter(|d| d.name.starts_with(&name))
        .map(|d| (d.name, d.version))
        .collect();
    assert_eq!(listed, vec![(name.clone(), 2), (other.clone(), 1)]);

    assert!(store.delete_document(kind, &name).await?);
    assert!(!store.delete_document(kind, &name).await?);
    assert_eq!(store.get_document(kind, &name, None).await?, None);
    assert!(store.document_history(kind, &name).await?.is_empty());
    assert!(store.delete_document(kind, &other).await?);
    Ok(())
}
