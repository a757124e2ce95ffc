//! Adaptation and boot-validation records (migration 0010) on every configured engine (SQLite, and
//! PostgreSQL when FERRY_TEST_POSTGRES is set): the image pipeline's guarded validation status, adapted
//! digests, the validations' guarded finish, an instance's latest validation, port-forward claims, a job's
//! notice, and an image's boot mode.

mod common;

use common::engines;
use ferry_db::*;

fn pipeline(image: &str, validation: &str) -> ImagePipelineRecord {
    ImagePipelineRecord {
        image_id: image.into(),
        adapt_status: "Adapted".into(),
        adapt_report: Some("{\"version\":1}".into()),
        adapt_reason: None,
        validation_status: validation.into(),
        validation_reason: None,
        options: "{\"version\":1}".into(),
        production_instance: None,
        updated_at: 100,
    }
}

fn validation(id: &str, image: &str, instance: &str, started: i64) -> ValidationRecord {
    ValidationRecord {
        id: id.into(),
        image_id: image.into(),
        job_id: Some("j-1".into()),
        run_id: Some("r-1".into()),
        instance_id: instance.into(),
        kind: "Image".into(),
        status: "Running".into(),
        report: None,
        error: None,
        console_path: None,
        started_at: started,
        ended_at: None,
    }
}

#[tokio::test]
async fn the_validation_status_of_an_image_moves_only_from_what_it_was() {
    for (engine, db, _keep) in engines().await {
        db.image_pipeline_put(&pipeline("m-1", "Pending"))
            .await
            .expect("database call");
        db.image_pipeline_put(&pipeline("m-2", "Skipped"))
            .await
            .expect("database call");
        let todo: Vec<String> = db
            .image_pipeline_list_to_validate()
            .await
            .expect("database call")
            .into_iter()
            .map(|p| p.image_id)
            .collect();
        assert_eq!(todo, ["m-1"], "{engine}: only pending images are listed");
        assert!(
            db.image_pipeline_validation_transition("m-1", &["Pending"], "Running", None, 101)
                .await
                .expect("database call"),
            "{engine}"
        );
        assert!(
            !db.image_pipeline_validation_transition("m-1", &["Pending"], "Running", None, 102)
                .await
                .expect("database call"),
            "{engine}: a second worker cannot take the same step"
        );
        assert!(
            db.image_pipeline_validation_transition(
                "m-1",
                &["Pending", "Running"],
                "Failed",
                Some("kernel-booted failed"),
                103
            )
            .await
            .expect("database call"),
            "{engine}"
        );
        let p = db
            .image_pipeline_get("m-1")
            .await
            .expect("database call")
            .expect("database call");
        assert_eq!(p.validation_status, "Failed", "{engine}");
        assert_eq!(
            p.validation_reason.as_deref(),
            Some("kernel-booted failed"),
            "{engine}"
        );
        assert!(
            db.image_pipeline_list_to_validate()
                .await
                .expect("database call")
                .is_empty(),
            "{engine}"
        );
        // Putting again replaces the record (a rebuild re-adapts).
        db.image_pipeline_put(&pipeline("m-1", "Pending"))
            .await
            .expect("database call");
        assert_eq!(
            db.image_pipeline_get("m-1")
                .await
                .expect("database call")
                .expect("database call")
                .validation_status,
            "Pending",
            "{engine}"
        );
        db.image_disk_digest_put("m-1", 0, "aa")
            .await
            .expect("database call");
        db.image_disk_digest_put("m-1", 1, "bb")
            .await
            .expect("database call");
        db.image_disk_digest_put("m-1", 0, "cc")
            .await
            .expect("database call");
        assert_eq!(
            db.image_disk_digest_list("m-1")
                .await
                .expect("database call"),
            vec![(0, "cc".to_owned()), (1, "bb".to_owned())],
            "{engine}: a disk's adapted digest is replaced, not duplicated"
        );
        db.validation_create(&validation("v-1", "m-1", "i-1", 10))
            .await
            .expect("database call");
        db.image_pipeline_delete("m-1")
            .await
            .expect("database call");
        assert!(
            db.image_pipeline_get("m-1")
                .await
                .expect("database call")
                .is_none(),
            "{engine}"
        );
        assert!(
            db.image_disk_digest_list("m-1")
                .await
                .expect("database call")
                .is_empty(),
            "{engine}"
        );
        assert!(
            db.validation_list_by_image("m-1")
                .await
                .expect("database call")
                .is_empty(),
            "{engine}: the image's validations go with it"
        );
    }
}

#[tokio::test]
async fn a_validation_finishes_once() {
    for (engine, db, _keep) in engines().await {
        db.validation_create(&validation("v-1", "m-1", "i-1", 10))
            .await
            .expect("database call");
        db.validation_create(&validation("v-2", "m-1", "i-2", 20))
            .await
            .expect("database call");
        assert!(
            db.validation_finish("v-1", "Failed", None, Some("interrupted"), None, 15)
                .await
                .expect("database call"),
            "{engine}"
        );
        assert!(
            !db.validation_finish("v-1", "Passed", Some("{}"), None, None, 16)
                .await
                .expect("database call"),
            "{engine}: a late result cannot overwrite an abandoned validation"
        );
        assert!(
            db.validation_finish(
                "v-2",
                "Passed",
                Some("{\"passed\":true}"),
                None,
                Some("/d/console.log"),
                30
            )
            .await
            .expect("database call"),
            "{engine}"
        );
        let list = db
            .validation_list_by_image("m-1")
            .await
            .expect("database call");
        assert_eq!(list.len(), 2, "{engine}");
        assert_eq!(list[0].status, "Failed", "{engine}");
        assert_eq!(list[0].error.as_deref(), Some("interrupted"), "{engine}");
        assert_eq!(list[1].status, "Passed", "{engine}");
        assert_eq!(list[1].ended_at, Some(30), "{engine}");
        assert_eq!(
            list[1].console_path.as_deref(),
            Some("/d/console.log"),
            "{engine}"
        );
        db.validation_create(&validation("v-3", "m-2", "i-2", 40))
            .await
            .expect("database call");
        let latest = db
            .validation_latest_by_instance("i-2")
            .await
            .expect("database call");
        assert_eq!(latest.map(|v| v.id).as_deref(), Some("v-3"), "{engine}");
        assert!(
            db.validation_latest_by_instance("i-9")
                .await
                .expect("database call")
                .is_none(),
            "{engine}"
        );
        assert_eq!(
            db.validation_get("v-2")
                .await
                .expect("database call")
                .map(|v| v.status)
                .as_deref(),
            Some("Passed"),
            "{engine}"
        );
    }
}

#[tokio::test]
async fn a_host_port_forwards_to_one_instance() {
    for (engine, db, _keep) in engines().await {
        assert_eq!(
            db.port_forward_claim("i-1", &[(8022, 22), (8080, 80)])
                .await
                .expect("database call"),
            Ok(()),
            "{engine}"
        );
        assert_eq!(
            db.port_forward_claim("i-2", &[(9000, 22), (8080, 80)])
                .await
                .expect("database call"),
            Err(8080),
            "{engine}: the taken port is named"
        );
        assert!(
            db.port_forward_list("i-2")
                .await
                .expect("database call")
                .is_empty(),
            "{engine}: a refused claim claims nothing (9000 stays free)"
        );
        let mine = db.port_forward_list("i-1").await.expect("database call");
        assert_eq!(
            mine.iter()
                .map(|f| (f.host_port, f.guest_port))
                .collect::<Vec<_>>(),
            vec![(8022, 22), (8080, 80)],
            "{engine}"
        );
        db.port_forward_release("i-1").await.expect("database call");
        assert_eq!(
            db.port_forward_claim("i-2", &[(9000, 22), (8080, 80)])
                .await
                .expect("database call"),
            Ok(()),
            "{engine}: released ports can be claimed again"
        );
    }
}

#[tokio::test]
async fn a_notice_keeps_the_job_status_and_images_learn_their_boot_mode() {
    for (engine, db, _keep) in engines().await {
        let source = SourceRecord {
            id: "s-1".into(),
            name: "host".into(),
            description: String::new(),
            state: "Available".into(),
            error_code: None,
            status_info: None,
            agent_version: "1".into(),
            inventory: "{}".into(),
            prechecks: "[]".into(),
            heartbeat_at: now(),
            created_at: now(),
            token_id: "at-1".into(),
            agent_key_id: "ak-1".into(),
            agent_secret_hash: "h".into(),
            job_id: None,
        };
        db.activation_code_create(&ActivationCodeRecord {
            id: "at-1".into(),
            name: "n".into(),
            description: String::new(),
            code_hash: "hash-at-1".into(),
            max_count: 1,
            registered_count: 0,
            ttl_days: 30,
            disabled: 0,
            created_at: now(),
        })
        .await
        .expect("database call");
        assert!(
            db.source_register("at-1", &source, now())
                .await
                .expect("database call"),
            "{engine}"
        );
        let job = JobRecord {
            id: "j-1".into(),
            name: "job".into(),
            description: String::new(),
            source_id: "s-1".into(),
            region_id: "local".into(),
            status: "Waiting".into(),
            business_status: None,
            error_code: None,
            status_info: None,
            job_type: 0,
            target_type: "Image".into(),
            image_name: "img".into(),
            image_id: None,
            run_once: 0,
            frequency: Some(1),
            max_images: Some(2),
            replication_parameters: String::new(),
            progress: 0.0,
            created_at: now(),
            start_time: None,
            end_time: None,
            scheduled_start_time: None,
            valid_time: None,
            client_token: None,
        };
        assert!(
            db.job_create(&job).await.expect("database call"),
            "{engine}"
        );
        db.job_set_notice("j-1", "Validation.Failed", "image m-1 failed")
            .await
            .expect("database call");
        let j = db
            .job_get("j-1")
            .await
            .expect("database call")
            .expect("database call");
        assert_eq!(j.status, "Waiting", "{engine}");
        assert_eq!(
            j.error_code.as_deref(),
            Some("Validation.Failed"),
            "{engine}"
        );
        assert_eq!(
            j.status_info.as_deref(),
            Some("image m-1 failed"),
            "{engine}"
        );
        let image = ImageRecord {
            id: "m-1".into(),
            name: "img".into(),
            region_id: "local".into(),
            job_id: Some("j-1".into()),
            run_id: None,
            status: "Available".into(),
            progress: 100,
            size_gib: 1,
            platform: String::new(),
            os_name: String::new(),
            architecture: "x86_64".into(),
            boot_mode: "BIOS".into(),
            description: String::new(),
            error: None,
            created_at: now(),
        };
        db.image_create(&image).await.expect("database call");
        db.image_set_boot_mode("m-1", "UEFI")
            .await
            .expect("database call");
        assert_eq!(
            db.image_get("m-1")
                .await
                .expect("database call")
                .expect("database call")
                .boot_mode,
            "UEFI",
            "{engine}"
        );
    }
}
