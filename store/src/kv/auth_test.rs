use super::*;
use crate::kv::types::{Compare, CompareOp, CompareTarget, TxnRequest};

fn role(name: &str, kind: RoleKind, prefixes: &[&str]) -> Role {
    Role {
        name: name.into(),
        kind,
        prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    }
}

fn table_with(roles: &[Role]) -> AuthTable {
    let mut t = AuthTable::default();
    let mut rows = Vec::new();
    for r in roles {
        assert_eq!(
            t.apply(&AuthCommand::PutRole(r.clone()), &mut rows)
                .unwrap(),
            AuthOutcome::Done
        );
    }
    t
}

fn issue(t: &mut AuthTable, role: &str) -> NewToken {
    let new = generate_token(role, 1, None);
    let mut rows = Vec::new();
    assert_eq!(
        t.apply(&AuthCommand::CreateToken(new.record.clone()), &mut rows)
            .unwrap(),
        AuthOutcome::Done
    );
    new
}

#[test]
fn tokens_are_long_random_and_only_hashed() {
    let a = generate_token("admin", 0, None);
    let b = generate_token("admin", 0, None);
    assert!(a.secret.starts_with(TOKEN_PREFIX));
    // 32 bytes of base64url without padding: 43 characters.
    assert_eq!(a.secret.len(), TOKEN_PREFIX.len() + 43);
    assert_ne!(a.secret, b.secret);
    assert_ne!(a.record.id, b.record.id);
    assert_eq!(a.record.hash, hash_secret(&a.secret));
    let encoded = crate::codec::encode(&a.record).unwrap();
    assert!(!encoded
        .windows(a.secret.len())
        .any(|w| w == a.secret.as_bytes()));
    assert!(!format!("{a:?}").contains(&a.secret));
}

#[test]
fn check_finds_known_tokens_and_refuses_others() {
    let mut t = table_with(&[]);
    let new = issue(&mut t, "reader");
    let p = t.check(&new.secret, 2).unwrap();
    assert_eq!(p.token_id(), Some(new.record.id.as_str()));
    assert_eq!(t.check("bal_nope", 2), Err(TokenRejection::Unknown));
    let mut wrong = new.secret.clone();
    wrong.pop();
    assert_eq!(t.check(&wrong, 2), Err(TokenRejection::Unknown));
}

#[test]
fn revoked_and_expired_tokens_are_refused() {
    let mut t = table_with(&[]);
    let new = issue(&mut t, "writer");
    let mut rows = Vec::new();
    t.apply(
        &AuthCommand::RevokeToken {
            id: new.record.id.clone(),
        },
        &mut rows,
    )
    .unwrap();
    assert_eq!(t.check(&new.secret, 2), Err(TokenRejection::Unknown));
    assert_eq!(rows, vec![RowOp::Delete(token_key(&new.record.id))]);

    let expiring = generate_token("writer", 1, Some(10));
    t.apply(
        &AuthCommand::CreateToken(expiring.record.clone()),
        &mut rows,
    )
    .unwrap();
    assert!(t.check(&expiring.secret, 9).is_ok());
    assert_eq!(t.check(&expiring.secret, 10), Err(TokenRejection::Expired));
}

#[test]
fn a_writer_stays_inside_its_prefixes() {
    let mut t = table_with(&[role("app", RoleKind::Writer, &["app/"])]);
    let new = issue(&mut t, "app");
    let p = t.check(&new.secret, 2).unwrap();
    let put = |key: &str| Command::Put {
        key: key.into(),
        value: vec![],
        prev_kv: false,
    };
    let del = |key: &str, prefix| Command::Delete {
        key: key.into(),
        prefix,
        prev_kv: false,
    };
    assert!(p.allows_command(&put("app/x")));
    assert!(!p.allows_command(&put("other")));
    assert!(!p.allows_command(&put("ap")));
    assert!(p.allows_command(&del("app/", true)));
    // A prefix delete of "ap" or "" would reach keys outside "app/".
    assert!(!p.allows_command(&del("ap", true)));
    assert!(!p.allows_command(&del("", true)));
    let txn = |compare: &str, op: TxnOp| {
        Command::Txn(TxnRequest {
            compare: vec![Compare {
                key: compare.into(),
                target: CompareTarget::Version(0),
                op: CompareOp::Equal,
            }],
            success: vec![],
            failure: vec![op],
        })
    };
    let inside = TxnOp::Put {
        key: "app/y".into(),
        value: vec![],
    };
    assert!(p.allows_command(&txn("app/a", inside.clone())));
    assert!(!p.allows_command(&txn("secret", inside)));
    for op in [
        TxnOp::Put {
            key: "x".into(),
            value: vec![],
        },
        TxnOp::Delete {
            key: "a".into(),
            prefix: true,
        },
        TxnOp::Get {
            key: "".into(),
            prefix: true,
        },
    ] {
        assert!(!p.allows_command(&txn("app/a", op)));
    }
    assert!(!p.allows_command(&Command::Compact { revision: 1 }));
    assert!(!p.is_admin());
}

#[test]
fn a_reader_reads_but_never_writes() {
    let mut t = table_with(&[role("ro", RoleKind::Reader, &["app/"])]);
    let new = issue(&mut t, "ro");
    let p = t.check(&new.secret, 2).unwrap();
    assert!(p.allows(Access::Read, "app/x"));
    assert!(!p.allows(Access::Read, "other"));
    assert!(!p.allows(Access::Write, "app/x"));
    assert!(!p.can_write_somewhere());
}

#[test]
fn roles_in_use_and_builtin_roles_stay() {
    let mut t = table_with(&[role("app", RoleKind::Writer, &["app/"])]);
    let new = issue(&mut t, "app");
    let mut rows = Vec::new();
    let delete = |name: &str| AuthCommand::DeleteRole { name: name.into() };
    assert_eq!(
        t.apply(&delete("app"), &mut rows).unwrap(),
        AuthOutcome::Refused(AuthRefusal::RoleInUse)
    );
    assert_eq!(
        t.apply(&delete("admin"), &mut rows).unwrap(),
        AuthOutcome::Refused(AuthRefusal::BuiltinRole)
    );
    t.apply(
        &AuthCommand::RevokeToken {
            id: new.record.id.clone(),
        },
        &mut rows,
    )
    .unwrap();
    assert_eq!(
        t.apply(&delete("app"), &mut rows).unwrap(),
        AuthOutcome::Done
    );
    let unknown = generate_token("app", 1, None);
    assert_eq!(
        t.apply(&AuthCommand::CreateToken(unknown.record), &mut rows)
            .unwrap(),
        AuthOutcome::Refused(AuthRefusal::UnknownRole)
    );
}

#[test]
fn enable_happens_once_and_a_retry_finds_its_token() {
    let mut t = AuthTable::default();
    let mut rows = Vec::new();
    let first = generate_token("admin", 1, None);
    let enable = AuthCommand::Enable {
        admin: first.record.clone(),
    };
    assert_eq!(t.apply(&enable, &mut rows).unwrap(), AuthOutcome::Done);
    assert!(t.enabled());
    assert_eq!(t.apply(&enable, &mut rows).unwrap(), AuthOutcome::Done);
    let second = generate_token("admin", 1, None);
    assert_eq!(
        t.apply(
            &AuthCommand::Enable {
                admin: second.record
            },
            &mut rows
        )
        .unwrap(),
        AuthOutcome::Refused(AuthRefusal::AlreadyEnabled)
    );
    assert!(t.check(&first.secret, 2).unwrap().is_admin());
}

#[test]
fn the_table_reloads_from_its_rows() {
    let mut t = table_with(&[role("app", RoleKind::Writer, &["app/"])]);
    let mut rows = vec![];
    let admin = generate_token("admin", 1, None);
    t.apply(
        &AuthCommand::Enable {
            admin: admin.record,
        },
        &mut rows,
    )
    .unwrap();
    let new = issue(&mut t, "app");
    // Replay every command's rows into a map, as the column family would.
    let mut cf = std::collections::BTreeMap::new();
    let mut all = Vec::new();
    let mut replay = AuthTable::default();
    replay
        .apply(
            &AuthCommand::PutRole(role("app", RoleKind::Writer, &["app/"])),
            &mut all,
        )
        .unwrap();
    all.extend(rows);
    replay
        .apply(&AuthCommand::CreateToken(new.record.clone()), &mut all)
        .unwrap();
    for row in all {
        match row {
            RowOp::Put(k, v) => {
                cf.insert(k, v);
            }
            RowOp::Delete(k) => {
                cf.remove(&k);
            }
        }
    }
    let loaded = AuthTable::from_rows(
        cf.into_iter()
            .map(|(k, v)| Ok::<_, io::Error>((k.into_boxed_slice(), v.into_boxed_slice()))),
    )
    .unwrap();
    assert_eq!(loaded, t);
    assert!(loaded.enabled());
    assert!(loaded.check(&new.secret, 2).is_ok());
}
