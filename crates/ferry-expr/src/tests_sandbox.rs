//! Security tests: each `sandbox_*` test proves one way out of the sandbox (or one way to
//! exhaust the machine) is closed. See shared/reference/security.md, rows NFLX-2017-001 and
//! CVE-2026-55175.

use serde_json::{Value, json};

use crate::tests_language::{FakeHost, run, run_with, sample_root};
use crate::{EvalContext, EvalError, Host, Limits, NullHost, ParseError, Template};

fn parse_err(src: &str) -> ParseError {
    match Template::parse(src) {
        Ok(_) => panic!("{src} should not parse"),
        Err(e) => e,
    }
}

fn eval_err(src: &str, root: &Value, limits: Limits) -> EvalError {
    let t = Template::parse_with_limits(src, &limits).unwrap_or_else(|e| panic!("{src}: {e}"));
    let ctx = EvalContext {
        root,
        host: &NullHost,
        limits,
    };
    match t.evaluate(&ctx) {
        Ok(v) => panic!("{src} should fail, got {v}"),
        Err(e) => e,
    }
}

#[test]
fn sandbox_type_references_are_rejected() {
    for src in [
        "${T(java.lang.Runtime).getRuntime().exec('id')}",
        "${T (java.lang.System).getenv()}",
        "${ 'x' + T(java.lang.Runtime) }",
        "${{1}.![T(java.lang.Runtime)]}",
    ] {
        let e = parse_err(src);
        assert!(matches!(e, ParseError::TypeReference { .. }), "{src}: {e}");
        assert!(
            e.to_string()
                .contains("type references are not allowed in Ferry expressions")
        );
    }
    // A lower-case `t(` is just an unknown method, also rejected.
    assert!(matches!(
        parse_err("${t(java.lang.Runtime)}"),
        ParseError::UnknownMethod { .. }
    ));
}

#[test]
fn sandbox_constructors_are_rejected() {
    for src in [
        "${new java.io.File('/etc/passwd')}",
        "${NEW java.lang.ProcessBuilder({'id'}).start()}",
        "${ {new} }",
    ] {
        let e = parse_err(src);
        assert!(matches!(e, ParseError::Constructor { .. }), "{src}: {e}");
        assert!(
            e.to_string()
                .contains("constructors are not allowed in Ferry expressions")
        );
    }
}

#[test]
fn sandbox_reflection_is_unknown_methods() {
    for src in [
        "${''.getClass().forName('java.lang.Runtime')}",
        "${s.getClass()}",
        "${#this.getClass()}",
        "${execution.getClass().getClassLoader()}",
        "${''.class.forName('x')}",
        "${s.hashCode()}",
        "${list.stream()}",
        "${parameters.put('env', 'x')}",
    ] {
        let e = parse_err(src);
        assert!(matches!(e, ParseError::UnknownMethod { .. }), "{src}: {e}");
    }
    let e = parse_err("${''.getClass()}").to_string();
    assert!(e.contains("unknown method 'getClass'"), "{e}");
    // Property-style access to Java internals just reads (absent) JSON keys or fails on scalars.
    let root = sample_root();
    assert!(
        run("${s.class}", &root)
            .unwrap_err()
            .contains("cannot read property 'class' of a string")
    );
    assert_eq!(run("${execution.class}", &root), Ok(Value::Null));
    assert!(
        run("${s['class']}", &root)
            .unwrap_err()
            .contains("must be an integer")
    );
}

#[test]
fn sandbox_bean_references_assignment_and_instanceof_are_rejected() {
    for src in [
        "${@bean}",
        "${@environment.getProperty('x')}",
        "${&factory}",
        "${ 1 + @x }",
    ] {
        assert!(
            matches!(parse_err(src), ParseError::BeanReference { .. }),
            "{src}"
        );
    }
    for src in [
        "${parameters.env = 'x'}",
        "${a = b}",
        "${n++}",
        "${--n}",
        "${ {a: b = 1} }",
    ] {
        let e = parse_err(src);
        assert!(matches!(e, ParseError::Assignment { .. }), "{src}: {e}");
        assert!(
            e.to_string()
                .contains("assignment is not allowed in Ferry expressions")
        );
    }
    assert!(matches!(
        parse_err("${s instanceof T(String)}"),
        ParseError::Instanceof { .. }
    ));
}

#[test]
fn sandbox_no_environment_files_or_processes() {
    for (src, want) in [
        ("${#env}", "unknown variable '#env'"),
        (
            "${#systemProperties['user.home']}",
            "unknown variable '#systemProperties'",
        ),
        (
            "${#systemEnvironment}",
            "unknown variable '#systemEnvironment'",
        ),
        (
            "${#fromFile('/etc/passwd')}",
            "unknown helper function '#fromFile'",
        ),
        ("${#exec('id')}", "unknown helper function '#exec'"),
        (
            "${#propertiesFromUrl('http://x')}",
            "unknown helper function '#propertiesFromUrl'",
        ),
    ] {
        let e = parse_err(src).to_string();
        assert!(e.contains(want), "{src}: {e}");
    }
    let root = sample_root();
    assert!(
        run("${environment}", &root)
            .unwrap_err()
            .contains("unknown name 'environment'")
    );
    assert!(
        run("${systemProperties}", &root)
            .unwrap_err()
            .contains("unknown name")
    );
}

#[test]
fn sandbox_from_url_is_refused_by_the_default_host() {
    let root = sample_root();
    for src in [
        "${#fromUrl('http://x')}",
        "${#jsonFromUrl('http://169.254.169.254/latest/meta-data/')}",
    ] {
        let e = run_with(src, &root, &NullHost).unwrap_err();
        assert!(
            e.contains("no hosts are allow-listed for #fromUrl"),
            "{src}: {e}"
        );
    }
    let t = Template::parse("${#fromUrl('http://x')}").unwrap();
    let ctx = EvalContext::new(&root, &NullHost);
    assert!(matches!(t.evaluate(&ctx), Err(EvalError::Fetch { .. })));
}

#[test]
fn sandbox_url_fetches_are_limited_per_evaluation() {
    struct CountingHost(std::sync::atomic::AtomicUsize);
    impl Host for CountingHost {
        fn fetch_url(&self, _url: &str) -> Result<String, String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("x".into())
        }
    }
    let host = CountingHost(std::sync::atomic::AtomicUsize::new(0));
    let root = json!({});
    let src = format!(
        "${{{{{}}}.![#fromUrl('https://ok.example/')]}}",
        vec!["1"; 50].join(",")
    );
    let e = run_with(&src, &root, &host).unwrap_err();
    assert!(e.contains("at most 8 URL fetches"), "{e}");
    assert_eq!(host.0.load(std::sync::atomic::Ordering::SeqCst), 8);
}

#[test]
fn sandbox_read_yaml_rejects_custom_tags() {
    let root = sample_root();
    for yaml in [
        "!!python/object/apply:os.system ['id']",
        "a: !!python/object:os.system {}",
        "a: !custom x",
        "a: !Ref Bucket",
        "!!javax.script.ScriptEngineManager [!!java.net.URLClassLoader [[!!java.net.URL ['http://x']]]]",
    ] {
        let src = format!("${{#readYaml('{}')}}", yaml.replace('\'', "''"));
        let e = run(&src, &root).unwrap_err();
        assert!(
            e.contains("#readYaml failed") && e.contains("invalid YAML"),
            "{yaml}: {e}"
        );
    }
    assert_eq!(
        run("${#readYaml('a: !!str 1')}", &root),
        Ok(json!({"a": "1"}))
    );
}

#[test]
fn sandbox_step_bomb_stops_at_the_step_limit() {
    let l = format!(
        "{{{}}}",
        (1..=50)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let src = format!("${{{l}.![{l}.![{l}.![#this]]]}}");
    let e = eval_err(&src, &json!({}), Limits::default());
    assert!(
        matches!(e, EvalError::StepLimit { limit: 100_000, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("exceeded the limit of 100000 evaluation steps")
    );
    // The same shape with small lists is fine.
    let small = "${{1,2}.![{1,2}.![{1,2}.![#this]]]}";
    assert_eq!(
        run(small, &json!({})).unwrap(),
        json!([[[1, 2], [1, 2]], [[1, 2], [1, 2]]])
    );
}

#[test]
fn sandbox_copy_bomb_stops_at_the_step_limit() {
    // Projecting the root over and over would copy it each time; copies are paid for in steps.
    let root = json!({"big": (0..5000).collect::<Vec<_>>()});
    let l = format!("{{{}}}", vec!["1"; 100].join(","));
    let e = eval_err(&format!("${{{l}.![#root]}}"), &root, Limits::default());
    assert!(matches!(e, EvalError::StepLimit { .. }), "{e}");
    // Long strings cost steps per 64 bytes as well.
    let root = json!({"s": "x".repeat(500_000)});
    let e = eval_err(&format!("${{{l}.![#root.s]}}"), &root, Limits::default());
    assert!(matches!(e, EvalError::StepLimit { .. }), "{e}");
}

#[test]
fn sandbox_cpu_bombs_stop_at_the_step_limit() {
    // Reading a long string is paid per 64 bytes, so repeating cheap-looking operations on a
    // 1 MB string many times runs out of steps instead of burning CPU.
    let root = json!({"s": "x".repeat(1_000_000)});
    let l = format!("{{{}}}", vec!["1"; 200].join(","));
    for body in [
        "#root.s.length()",
        "#root.s.substring(1).isEmpty()",
        "#root.s < #root.s",
        "#root.s == #root.s",
        "#root.s.contains('y')",
        "#root.s matches 'x*'",
        "{a: 1}[#root.s]",
        "#alphanumerical(#root.s)",
        "#root.s[999999]",
    ] {
        let e = eval_err(&format!("${{{l}.![{body}]}}"), &root, Limits::default());
        assert!(matches!(e, EvalError::StepLimit { .. }), "{body}: {e}");
    }
    // Compiling many different regexes is paid for too (the same pattern is compiled once).
    let numbers = (1..=200)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let root = json!({"s": "x"});
    let distinct = format!("${{{{{numbers}}}.![#root.s matches ('x{{' + #this + '}}')]}}");
    let e = eval_err(&distinct, &root, Limits::default());
    assert!(matches!(e, EvalError::StepLimit { .. }), "{e}");
    let same = format!("${{{{{numbers}}}.![#root.s matches ('x{{' + 1 + '}}')].size()}}");
    assert_eq!(run(&same, &root), Ok(json!(200)));
}

#[test]
fn sandbox_string_doubling_bomb_stops_at_the_output_limit() {
    let src = format!("${{'a'{}}}", ".replace('a', 'aa')".repeat(40));
    let e = eval_err(&src, &json!({}), Limits::default());
    assert!(
        matches!(
            e,
            EvalError::OutputLimit {
                limit: 1_048_576,
                ..
            }
        ),
        "{e}"
    );
    for src in [
        "${'ab' * 1000000000}".to_string(),
        "${'ab' * 9223372036854775807}".to_string(),
        format!("${{'{}'.replaceAll('x', '$0$0$0$0')}}", "x".repeat(300_000)),
        format!(
            "${{#toBase64('{}'.replace('x', 'xxxx'))}}",
            "x".repeat(200_000)
        ),
        format!("${{#toBase64('{}')}}", "x".repeat(900_000)),
    ] {
        let limits = Limits {
            max_source_len: 1 << 20,
            ..Limits::default()
        };
        let e = eval_err(&src, &json!({}), limits);
        assert!(
            matches!(e, EvalError::OutputLimit { .. }),
            "{}: {e}",
            &src[..40.min(src.len())]
        );
    }
    // Concatenation of a 1 KiB string eight times, under a 4 KiB limit.
    let mut root = json!({"s": "x".repeat(1024)});
    let e = eval_err(
        "${s + s + s + s + s + s + s + s}",
        &root,
        Limits {
            max_output_bytes: 4096,
            ..Limits::default()
        },
    );
    assert!(
        matches!(e, EvalError::OutputLimit { limit: 4096, .. }),
        "{e}"
    );
    root["s"] = json!("ok");
    assert_eq!(run("${s + s}", &root), Ok(json!("okok")));
}

#[test]
fn sandbox_to_json_refuses_expressions() {
    let root = json!({"payload": {"script": "echo ${secret}"}, "clean": {"a": "$ {x}"}});
    let e = eval_err("${#toJson(payload)}", &root, Limits::default());
    assert!(matches!(e, EvalError::ToJsonExpression { .. }), "{e}");
    assert!(e.to_string().contains("#toJson result contains '${'"));
    assert_eq!(
        run("${#toJson(clean)}", &root),
        Ok(json!(r#"{"a":"$ {x}"}"#))
    );
    // Built at evaluation time from harmless pieces: still refused.
    let e = eval_err("${#toJson({'$' + '{x}'})}", &root, Limits::default());
    assert!(matches!(e, EvalError::ToJsonExpression { .. }), "{e}");
}

#[test]
fn sandbox_deep_nesting_is_a_parse_error_not_a_stack_overflow() {
    // Run on a deliberately small stack: the parser must give up long before it runs out.
    let handle = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let n = 10_000;
            let inputs = [
                format!("${{{}1{}}}", "(".repeat(n), ")".repeat(n)),
                format!("${{{}1{}}}", "{".repeat(n), "}".repeat(n)),
                format!("${{{}true}}", "!".repeat(n)),
                format!("${{{}1}}", "- ".repeat(n)),
                format!("${{{}1{}}}", "#toInt(".repeat(n), ")".repeat(n)),
                format!("${{a{}}}", "[0]".repeat(n)),
                format!("${{a{}}}", ".?[true]".repeat(n)),
                format!("${{1{}}}", " + 1".repeat(n)),
                format!("${{{}}}", "t ? 1 : ".repeat(n) + "1"),
            ];
            for src in inputs {
                let limits = Limits {
                    max_source_len: 1 << 20,
                    ..Limits::default()
                };
                match Template::parse_with_limits(&src, &limits) {
                    Err(ParseError::TooDeep { limit: 64, .. }) => {}
                    other => panic!("{}: {other:?}", &src[..20]),
                }
            }
            // Even with the largest allowed depth, deep input fails cleanly on this stack.
            let limits = Limits {
                max_source_len: 1 << 20,
                max_depth: usize::MAX,
                ..Limits::default()
            };
            let src = format!("${{{}1{}}}", "(".repeat(n), ")".repeat(n));
            assert!(matches!(
                Template::parse_with_limits(&src, &limits),
                Err(ParseError::TooDeep {
                    limit: crate::HARD_MAX_DEPTH,
                    ..
                })
            ));
            let src = format!("${{{}1{}}}", "(".repeat(100), ")".repeat(100));
            let t = Template::parse_with_limits(&src, &limits).unwrap();
            let root = json!({});
            let ctx = EvalContext {
                root: &root,
                host: &NullHost,
                limits,
            };
            assert_eq!(t.evaluate(&ctx).unwrap(), json!(1));
        })
        .unwrap();
    handle.join().unwrap();
}

#[test]
fn sandbox_source_length_is_limited() {
    let src = format!("${{{}}}", "1 + ".repeat(5000) + "1");
    assert!(matches!(
        parse_err(&src),
        ParseError::TooLong { limit: 16384, .. }
    ));
    // Literal text around expressions is not limited.
    let src = format!("{}${{1}}", "x".repeat(100_000));
    assert!(Template::parse(&src).is_ok());
}

#[test]
fn sandbox_regexes_are_size_limited() {
    let root = sample_root();
    let e = run("${'a' matches '(a{1000}){1000}'}", &root).unwrap_err();
    assert!(e.contains("too large"), "{e}");
    let e = run("${'aa' matches '(a)\\1'}", &root).unwrap_err();
    assert!(e.contains("invalid regular expression"), "{e}");
    // Catastrophic backtracking patterns run in linear time.
    let src = format!("${{'{}b' matches '(a+)+c'}}", "a".repeat(10_000));
    assert_eq!(run(&src, &root), Ok(json!(false)));
}

#[test]
fn sandbox_helpers_run_only_through_the_host() {
    // FakeHost answers; the same expressions with NullHost fail: no helper reaches anything
    // on its own.
    let root = sample_root();
    for src in [
        "${#stage('Bake')}",
        "${#judgment('Approve')}",
        "${#fromUrl('https://allowed.example/text')}",
    ] {
        assert!(run_with(src, &root, &FakeHost).is_ok(), "{src}");
        assert!(run_with(src, &root, &NullHost).is_err(), "{src}");
    }
}
