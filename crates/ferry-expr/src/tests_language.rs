//! Data-driven tests of the whole language: every literal, operator, method and helper, as a
//! table of (template, expected JSON or error substring) over one root object and a fake host.
//! Also home of the shared test support ([`FakeHost`], [`run`], [`check_table`]).

use serde_json::{Value, json};

use crate::{EvalContext, Host, NullHost, Template};

/// A host with a few stages, a judgment, a user, artifacts and one allow-listed URL.
pub(crate) struct FakeHost;

impl Host for FakeHost {
    fn stage(&self, name_or_id: &str) -> Option<Value> {
        match name_or_id {
            "Deploy to QA" | "01HQA" => Some(json!({
                "id": "01HQA", "refId": "2", "name": "Deploy to QA", "type": "deploy", "status": "SUCCEEDED",
                "context": {"deploy.server.groups": {"us-east-1": ["app-qa-v003"]}, "account": "qa"},
                "outputs": {"instanceCount": 2}
            })),
            "Bake" => Some(json!({
                "id": "01HBAKE", "refId": "1", "name": "Bake", "type": "bake", "status": "SUCCEEDED",
                "context": {"ami": "ami-123"}, "outputs": {}
            })),
            _ => None,
        }
    }

    fn stage_by_ref_id(&self, ref_id: &str) -> Option<Value> {
        match ref_id {
            "2" => self.stage("Deploy to QA"),
            "1" => self.stage("Bake"),
            _ => None,
        }
    }

    fn current_stage(&self) -> Option<Value> {
        Some(json!({"name": "Current", "refId": "9", "status": "RUNNING", "context": {}}))
    }

    fn judgment(&self, stage_name: &str) -> Option<Value> {
        (stage_name == "Approve").then(|| json!("yes"))
    }

    fn current_user(&self) -> Option<String> {
        Some("alice".into())
    }

    fn deployed_server_groups(&self, stage: Option<&str>) -> Option<Value> {
        match stage {
            None | Some("Deploy to QA") => Some(
                json!([{"account": "qa", "region": "us-east-1", "serverGroup": "app-qa-v003"}]),
            ),
            Some(_) => None,
        }
    }

    fn manifest_label_value(&self, stage: &str, kind: &str, label: &str) -> Option<Value> {
        (stage == "Deploy" && kind == "replicaSet" && label == "app").then(|| json!("frontend"))
    }

    fn trigger_resolved_artifact(&self, name: &str) -> Option<Value> {
        (name == "image").then(
            || json!({"name": "image", "type": "docker/image", "reference": "gcr.io/x/app:1.2"}),
        )
    }

    fn fetch_url(&self, url: &str) -> Result<String, String> {
        match url {
            "https://allowed.example/config.json" => Ok(r#"{"a": 1, "list": [1, 2]}"#.into()),
            "https://allowed.example/text" => Ok("hello".into()),
            _ => Err(format!("host of '{url}' is not allow-listed")),
        }
    }
}

/// The root most tests evaluate against.
pub(crate) fn sample_root() -> Value {
    json!({
        "execution": {
            "id": "01HEXEC", "name": "deploy-app", "application": "app",
            "stages": [
                {"name": "Bake", "type": "bake", "status": "SUCCEEDED", "refId": "1", "context": {"ami": "ami-123"}},
                {"name": "Deploy to QA", "type": "deploy", "status": "SUCCEEDED", "refId": "2", "context": {"account": "qa"}},
                {"name": "Deploy to Prod", "type": "deploy", "status": "RUNNING", "refId": "3"}
            ]
        },
        "trigger": {"type": "manual", "user": "alice", "parameters": {"env": "prod", "replicas": "3"}},
        "parameters": {"env": "prod", "replicas": "3", "tag": "", "flag": "true", "region": "us-east-1"},
        "scmInfo": {"sha1": "abc123", "branch": "main"},
        "n": 7, "f": 2.5, "s": "Hello World", "list": [3, 1, 2],
        "map": {"a": 1, "b": "two", "c": null},
        "nil": null, "t": true, "empty": "", "names": ["alpha", "beta", "gamma"],
        "big": i64::MAX
    })
}

/// Parses and evaluates `src`; errors become their message (parse errors prefixed `parse: `).
pub(crate) fn run_with(src: &str, root: &Value, host: &dyn Host) -> Result<Value, String> {
    let t = Template::parse(src).map_err(|e| format!("parse: {e}"))?;
    let ctx = EvalContext::new(root, host);
    t.evaluate(&ctx).map_err(|e| e.to_string())
}

/// [`run_with`] with the [`FakeHost`].
pub(crate) fn run(src: &str, root: &Value) -> Result<Value, String> {
    run_with(src, root, &FakeHost)
}

/// Expected outcome of one case.
pub(crate) enum Want {
    /// This JSON value.
    Is(Value),
    /// An error whose message contains this text.
    Fails(&'static str),
}

pub(crate) use Want::{Fails, Is};

/// Runs every case against `root`, reporting all mismatches at once.
pub(crate) fn check_table(root: &Value, cases: &[(&str, Want)]) {
    let mut failures = Vec::new();
    for (src, want) in cases {
        let got = run(src, root);
        let ok = match (want, &got) {
            (Is(w), Ok(g)) => w == g,
            (Fails(w), Err(g)) => g.contains(w),
            _ => false,
        };
        if !ok {
            let want = match want {
                Is(w) => format!("{w}"),
                Fails(w) => format!("error containing {w:?}"),
            };
            failures.push(format!("{src}\n    want {want}\n    got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn literals() {
    check_table(
        &sample_root(),
        &[
            ("${1}", Is(json!(1))),
            ("${-5}", Is(json!(-5))),
            ("${1.5}", Is(json!(1.5))),
            ("${1e3}", Is(json!(1000.0))),
            ("${0x10}", Is(json!(16))),
            ("${10L}", Is(json!(10))),
            ("${2f}", Is(json!(2.0))),
            ("${'a''b'}", Is(json!("a'b"))),
            ("${\"say \"\"hi\"\"\"}", Is(json!("say \"hi\""))),
            ("${''}", Is(json!(""))),
            ("${true}", Is(json!(true))),
            ("${False}", Is(json!(false))),
            ("${null}", Is(json!(null))),
            ("${{1, 2, 3}}", Is(json!([1, 2, 3]))),
            (
                "${{a: 1, 'b': 2, \"c d\": {x: {1, 'two'}}}}",
                Is(json!({"a": 1, "b": 2, "c d": {"x": [1, "two"]}})),
            ),
            ("${{}}", Is(json!([]))),
            ("${{:}}", Is(json!({}))),
            ("${{1: 'one'}['1']}", Is(json!("one"))),
            ("${{a: 1, a: 2}}", Is(json!({"a": 2}))),
            ("${{n, s}}", Is(json!([7, "Hello World"]))),
            ("${99999999999999999999}", Fails("parse: invalid number")),
        ],
    );
}

#[test]
fn arithmetic() {
    check_table(
        &sample_root(),
        &[
            ("${1 + 2 * 3}", Is(json!(7))),
            ("${(1 + 2) * 3}", Is(json!(9))),
            ("${7 / 2}", Is(json!(3))),
            ("${-7 / 2}", Is(json!(-3))),
            ("${7 % 3}", Is(json!(1))),
            ("${-7 % 3}", Is(json!(-1))),
            ("${7.0 / 2}", Is(json!(3.5))),
            ("${7 / 2.0}", Is(json!(3.5))),
            ("${5.5 % 2}", Is(json!(1.5))),
            ("${n - f}", Is(json!(4.5))),
            ("${n div 2}", Is(json!(3))),
            ("${n mod 4}", Is(json!(3))),
            ("${n DIV 2 + n MOD 4}", Is(json!(6))),
            ("${+n}", Is(json!(7))),
            ("${- -n}", Is(json!(7))),
            ("${2 ^ 10}", Is(json!(1024))),
            ("${4.0 ^ 0.5}", Is(json!(2.0))),
            ("${2 ^ 0}", Is(json!(1))),
            (
                "${1 / 0}",
                Fails("division by zero at position 2 (`1 / 0`)"),
            ),
            ("${1.0 / 0}", Fails("division by zero")),
            ("${5 % 0}", Fails("division by zero")),
            ("${2 ^ -1}", Fails("negative integer exponent")),
            ("${2 ^ 63}", Fails("integer overflow in '^'")),
            (
                "${big + 1}",
                Fails("integer overflow in '+' at position 2 (`big + 1`)"),
            ),
            ("${-big - 2}", Fails("integer overflow in '-'")),
            ("${big * 2}", Fails("integer overflow in '*'")),
            ("${(-big - 1) / -1}", Fails("integer overflow in '/'")),
            ("${-(-big - 1)}", Fails("integer overflow in '-'")),
            ("${1e308 * 10}", Fails("not a finite number")),
            (
                "${-s}",
                Fails("unary '-' needs a number, not the string 'Hello World'"),
            ),
            (
                "${'a' - 1}",
                Fails("cannot apply '-' to the string 'a' and the number 1"),
            ),
            (
                "${list + 1}",
                Fails("cannot apply '+' to a list of 3 elements and the number 1"),
            ),
            (
                "${nil + 1}",
                Fails("cannot apply '+' to null and the number 1"),
            ),
            ("${t * 2}", Fails("cannot apply '*'")),
        ],
    );
}

#[test]
fn string_concatenation() {
    check_table(
        &sample_root(),
        &[
            ("${'a' + 1}", Is(json!("a1"))),
            ("${1 + 'a'}", Is(json!("1a"))),
            ("${1 + 2 + 'a'}", Is(json!("3a"))),
            ("${'a' + 1 + 2}", Is(json!("a12"))),
            ("${'a' + nil}", Is(json!("anull"))),
            ("${'x' + list}", Is(json!("x[3,1,2]"))),
            (
                "${'m' + map}",
                Is(json!("m{\"a\":1,\"b\":\"two\",\"c\":null}")),
            ),
            ("${'v' + f}", Is(json!("v2.5"))),
            ("${'a' + t}", Is(json!("atrue"))),
            ("${s + '!'}", Is(json!("Hello World!"))),
            ("${'ab' * 3}", Is(json!("ababab"))),
            ("${'ab' * 0}", Is(json!(""))),
            ("${'ab' * -1}", Fails("cannot repeat a string -1 times")),
            (
                "${'ab' * 'c'}",
                Fails("a string can only be multiplied by an integer"),
            ),
        ],
    );
}

#[test]
fn comparisons() {
    check_table(
        &sample_root(),
        &[
            ("${1 == 1.0}", Is(json!(true))),
            ("${1 == '1'}", Is(json!(false))),
            ("${nil == null}", Is(json!(true))),
            ("${nil != null}", Is(json!(false))),
            ("${'a' != 'b'}", Is(json!(true))),
            ("${list == {3, 1, 2}}", Is(json!(true))),
            ("${list == {1, 2, 3}}", Is(json!(false))),
            ("${map == {c: null, b: 'two', a: 1}}", Is(json!(true))),
            ("${2 > 1}", Is(json!(true))),
            ("${2 >= 2.0}", Is(json!(true))),
            ("${1 < 1}", Is(json!(false))),
            ("${1 <= 1}", Is(json!(true))),
            ("${2.5 > 2}", Is(json!(true))),
            ("${'abc' < 'abd'}", Is(json!(true))),
            ("${'b' > 'abc'}", Is(json!(true))),
            ("${false < true}", Is(json!(true))),
            ("${n gt 5 and n lt 10}", Is(json!(true))),
            ("${n eq 7}", Is(json!(true))),
            ("${n ne 7}", Is(json!(false))),
            ("${n le 7}", Is(json!(true))),
            ("${n ge 8}", Is(json!(false))),
            (
                "${'10' < 9}",
                Fails("cannot compare the string '10' with the number 9 using '<'"),
            ),
            ("${nil < 1}", Fails("cannot compare null with the number 1")),
            ("${list > 1}", Fails("cannot compare a list of 3 elements")),
            ("${s matches 'H.*d'}", Is(json!(true))),
            ("${s matches 'World'}", Is(json!(false))),
            ("${s matches '(?i)hello.*'}", Is(json!(true))),
            ("${s matches '('}", Fails("invalid regular expression '('")),
            (
                "${n matches '7'}",
                Fails("'matches' needs a string and a pattern string, not a number and a string"),
            ),
        ],
    );
}

#[test]
fn logic_ternary_and_elvis() {
    check_table(
        &sample_root(),
        &[
            ("${true and false}", Is(json!(false))),
            ("${true && true}", Is(json!(true))),
            ("${false or true}", Is(json!(true))),
            ("${false || false}", Is(json!(false))),
            ("${true AND NOT false}", Is(json!(true))),
            ("${!true}", Is(json!(false))),
            ("${not false}", Is(json!(true))),
            ("${!'false'}", Is(json!(true))),
            ("${parameters.flag and true}", Is(json!(true))),
            ("${'TRUE' and true}", Is(json!(true))),
            (
                "${'yes' and true}",
                Fails(
                    "condition must be a boolean (or the string 'true'/'false'), found the string 'yes'",
                ),
            ),
            ("${1 and true}", Fails("found the number 1")),
            ("${nil or true}", Fails("found null")),
            ("${true and nil}", Fails("found null")),
            ("${!n}", Fails("found the number 7")),
            ("${false and nil.x}", Is(json!(false))),
            ("${true or 1 / 0}", Is(json!(true))),
            ("${t ? 'y' : 'n'}", Is(json!("y"))),
            ("${n > 5 ? 'big' : 'small'}", Is(json!("big"))),
            (
                "${n > 50 ? 'big' : n > 5 ? 'medium' : 'small'}",
                Is(json!("medium")),
            ),
            ("${'true' ? 1 : 2}", Is(json!(1))),
            ("${n ? 1 : 2}", Fails("condition must be a boolean")),
            ("${t ? 1 : 1 / 0}", Is(json!(1))),
            ("${nil ?: 'd'}", Is(json!("d"))),
            ("${empty ?: 'd'}", Is(json!("d"))),
            ("${s ?: 'd'}", Is(json!("Hello World"))),
            ("${0 ?: 'd'}", Is(json!(0))),
            ("${false ?: 'd'}", Is(json!(false))),
            ("${map.zzz ?: map.c ?: 'last'}", Is(json!("last"))),
            ("${{} ?: 'd'}", Is(json!([]))),
        ],
    );
}

#[test]
fn property_and_index_access() {
    check_table(
        &sample_root(),
        &[
            ("${execution.name}", Is(json!("deploy-app"))),
            ("${execution['name']}", Is(json!("deploy-app"))),
            ("${execution[\"name\"]}", Is(json!("deploy-app"))),
            ("${execution.stages[0].name}", Is(json!("Bake"))),
            ("${execution.stages[1]['context'].account}", Is(json!("qa"))),
            ("${execution.stages[n - 5].refId}", Is(json!("3"))),
            (
                "${execution.stages[-1]}",
                Fails("index -1 is out of bounds for a list of length 3"),
            ),
            (
                "${execution.stages[3]}",
                Fails("index 3 is out of bounds for a list of length 3"),
            ),
            ("${list[1]}", Is(json!(1))),
            (
                "${list['x']}",
                Fails("an index into a list must be an integer, not the string 'x'"),
            ),
            ("${list[1.5]}", Fails("must be an integer")),
            ("${map.zzz}", Is(json!(null))),
            ("${map['zzz']}", Is(json!(null))),
            ("${map.c}", Is(json!(null))),
            (
                "${map.c.d}",
                Fails(
                    "cannot read property 'd' of null at position 2 (`map.c.d`) (use '?.' to allow null)",
                ),
            ),
            ("${map.c?.d}", Is(json!(null))),
            ("${map?.a}", Is(json!(1))),
            ("${nil?.a?.b}", Is(json!(null))),
            ("${nil?.a.b}", Fails("cannot read property 'b' of null")),
            ("${nil.a}", Fails("cannot read property 'a' of null")),
            ("${nil['a']}", Fails("cannot index into null")),
            ("${nil?.['a']}", Is(json!(null))),
            (
                "${map[list]}",
                Fails("a map key must be a string, not a list"),
            ),
            ("${{'1': 'one'}[1]}", Is(json!("one"))),
            (
                "${s.length}",
                Fails("cannot read property 'length' of a string (use length())"),
            ),
            (
                "${list.size}",
                Fails("cannot read property 'size' of a list (use size())"),
            ),
            ("${n.x}", Fails("cannot read property 'x' of a number")),
            ("${n[0]}", Fails("cannot index into a number")),
            ("${s[0]}", Is(json!("H"))),
            (
                "${s[100]}",
                Fails("index 100 is out of bounds for a string of length 11"),
            ),
            ("${['parameters']['env']}", Is(json!("prod"))),
            ("${['nope']}", Is(json!(null))),
            ("${#root['nope']}", Is(json!(null))),
            ("${#root.parameters.env}", Is(json!("prod"))),
            ("${#this.n}", Is(json!(7))),
            ("${#this == #root}", Is(json!(true))),
            (
                "${nope}",
                Fails(
                    "unknown name 'nope' at position 2 (`nope`); top-level names are: execution, trigger, parameters",
                ),
            ),
            ("${paramters.env}", Fails("unknown name 'paramters'")),
            ("${parameters['tag'] ?: 'latest'}", Is(json!("latest"))),
            ("${parameters.missing ?: 'default'}", Is(json!("default"))),
        ],
    );
}

#[test]
fn selection_and_projection() {
    check_table(
        &sample_root(),
        &[
            ("${names.?[#this.startsWith('a')]}", Is(json!(["alpha"]))),
            ("${names.?[length() > 4]}", Is(json!(["alpha", "gamma"]))),
            ("${names.^[length() > 4]}", Is(json!("alpha"))),
            ("${names.$[length() > 4]}", Is(json!("gamma"))),
            ("${names.^[#this == 'zzz']}", Is(json!(null))),
            ("${names.$[#this == 'zzz']}", Is(json!(null))),
            ("${names.?[#this == 'zzz']}", Is(json!([]))),
            (
                "${names.![#this.toUpperCase()]}",
                Is(json!(["ALPHA", "BETA", "GAMMA"])),
            ),
            ("${names.![length()]}", Is(json!([5, 4, 5]))),
            (
                "${execution.stages.?[type == 'deploy'].![name]}",
                Is(json!(["Deploy to QA", "Deploy to Prod"])),
            ),
            (
                "${execution.stages.?[status == 'RUNNING'].size()}",
                Is(json!(1)),
            ),
            (
                "${execution.stages.![context?.ami]}",
                Is(json!(["ami-123", null, null])),
            ),
            (
                "${execution.stages.?[missing == null].size()}",
                Is(json!(3)),
            ),
            (
                "${execution.stages.?[refId == #root.execution.stages[2].refId][0].name}",
                Is(json!("Deploy to Prod")),
            ),
            (
                "${execution.stages.?[name == execution.name]}",
                Fails("cannot read property 'name' of null"),
            ),
            ("${list.?[#this > 1]}", Is(json!([3, 2]))),
            (
                "${list.?[#this]}",
                Fails(
                    "condition must be a boolean (or the string 'true'/'false'), found the number 3 at position 9 (`#this`)",
                ),
            ),
            ("${list.?['true']}", Is(json!([3, 1, 2]))),
            ("${map.?[value == 1]}", Is(json!({"a": 1}))),
            ("${map.?[key != 'a']}", Is(json!({"b": "two", "c": null}))),
            ("${map.![key]}", Is(json!(["a", "b", "c"]))),
            (
                "${map.![key + '=' + value]}",
                Is(json!(["a=1", "b=two", "c=null"])),
            ),
            ("${map.^[key != 'a']}", Is(json!({"b": "two"}))),
            ("${map.$[key != 'z']}", Is(json!({"c": null}))),
            ("${map.^[key == 'z']}", Is(json!(null))),
            ("${nil.?[true]}", Fails("cannot select from null")),
            ("${nil.![1]}", Fails("cannot project null")),
            ("${nil?.?[true]}", Is(json!(null))),
            ("${nil?.![1]}", Is(json!(null))),
            (
                "${s.?[true]}",
                Fails("cannot select from a string (only lists and maps)"),
            ),
            ("${{1, 2, 3}.![#this * 10]}", Is(json!([10, 20, 30]))),
            (
                "${{1, 2, 3}.?[#this >= 2].![#this + #root.n]}",
                Is(json!([9, 10])),
            ),
            ("${{1, 2, 3}.?[#this >= 2][0]}", Is(json!(2))),
            ("${{1, 2, 3}.^[#this >= 2]}", Is(json!(2))),
            ("${{1, 2, 3}.$[#this >= 2]}", Is(json!(3))),
            ("${{{a: 1}, {a: 2}}.![a]}", Is(json!([1, 2]))),
            ("${{{a: 1}, {b: 2}}.?[a == 1]}", Is(json!([{"a": 1}]))),
            (
                "${{{1, 2}, {3}}.![#this.![#this + 1]]}",
                Is(json!([[2, 3], [4]])),
            ),
            ("${names.![#root.n]}", Is(json!([7, 7, 7]))),
            ("${names.![#this]}", Is(json!(["alpha", "beta", "gamma"]))),
            ("${{'a', 'b'}.![isEmpty()]}", Is(json!([false, false]))),
            (
                "${names.![x]}",
                Fails("cannot read property 'x' of a string"),
            ),
        ],
    );
}

#[test]
fn string_methods() {
    check_table(
        &sample_root(),
        &[
            ("${s.contains('World')}", Is(json!(true))),
            ("${s.contains('world')}", Is(json!(false))),
            ("${s.startsWith('Hell')}", Is(json!(true))),
            ("${s.endsWith('d')}", Is(json!(true))),
            (
                "${s.contains(1)}",
                Fails(
                    "bad arguments to 'contains' at position 2 (`s.contains(1)`): argument 1 must be a string, not the number 1",
                ),
            ),
            ("${s.toLowerCase()}", Is(json!("hello world"))),
            ("${s.toUpperCase()}", Is(json!("HELLO WORLD"))),
            ("${'ü'.toUpperCase() + 'ß'.toUpperCase()}", Is(json!("ÜSS"))),
            ("${s.substring(6)}", Is(json!("World"))),
            ("${s.substring(0, 5)}", Is(json!("Hello"))),
            ("${s.substring(11)}", Is(json!(""))),
            ("${'héllo'.substring(1, 2)}", Is(json!("é"))),
            (
                "${s.substring(5, 3)}",
                Fails("range 5..3 is out of bounds for length 11"),
            ),
            ("${s.substring(-1)}", Fails("out of bounds")),
            ("${s.substring(0, 100)}", Fails("out of bounds")),
            (
                "${s.substring('a')}",
                Fails("argument 1 must be an integer"),
            ),
            ("${s.substring()}", Fails("takes 1 to 2 argument(s), got 0")),
            ("${s.replace('l', 'L')}", Is(json!("HeLLo WorLd"))),
            ("${'abc'.replace('', '-')}", Is(json!("-a-b-c-"))),
            ("${s.replaceAll('[aeiou]', '*')}", Is(json!("H*ll* W*rld"))),
            (
                "${s.replaceAll('(\\w+) (\\w+)', '$2 $1')}",
                Is(json!("World Hello")),
            ),
            (
                "${s.replaceAll('o', '$')}",
                Fails("invalid replacement '$'"),
            ),
            (
                "${s.replaceAll('[', 'x')}",
                Fails("invalid regular expression '['"),
            ),
            ("${s.replaceFirst('o', '0')}", Is(json!("Hell0 World"))),
            ("${s.split(' ')}", Is(json!(["Hello", "World"]))),
            ("${'a,b,,c,,'.split(',')}", Is(json!(["a", "b", "", "c"]))),
            ("${'a.b.c'.split('\\.')}", Is(json!(["a", "b", "c"]))),
            (
                "${'us-east-1,us-west-2'.split(',')[1]}",
                Is(json!("us-west-2")),
            ),
            ("${'  x  '.trim()}", Is(json!("x"))),
            ("${s.length()}", Is(json!(11))),
            ("${'ü'.length()}", Is(json!(1))),
            ("${s.equals('Hello World')}", Is(json!(true))),
            ("${s.equals(1)}", Is(json!(false))),
            ("${s.equalsIgnoreCase('hello world')}", Is(json!(true))),
            ("${s.equalsIgnoreCase(nil)}", Is(json!(false))),
            ("${s.isEmpty()}", Is(json!(false))),
            ("${empty.isEmpty()}", Is(json!(true))),
            ("${s.indexOf('o')}", Is(json!(4))),
            ("${s.lastIndexOf('o')}", Is(json!(7))),
            ("${s.indexOf('z')}", Is(json!(-1))),
            ("${'éa'.indexOf('a')}", Is(json!(1))),
            ("${s.charAt(0)}", Is(json!("H"))),
            (
                "${s.charAt(11)}",
                Fails("index 11 is out of bounds for a string of length 11"),
            ),
            ("${s.matches('H.*d')}", Is(json!(true))),
            ("${s.matches('H')}", Is(json!(false))),
            ("${s.toString()}", Is(json!("Hello World"))),
            (
                "${s.size()}",
                Fails(
                    "a string has no method 'size' at position 2 (`s.size()`); its methods are: charAt, contains",
                ),
            ),
            ("${s.get(0)}", Fails("a string has no method 'get'")),
            ("${s.keySet()}", Fails("a string has no method 'keySet'")),
            (
                "${nil.length()}",
                Fails("cannot call method 'length' on null"),
            ),
            ("${nil?.length()}", Is(json!(null))),
            ("${parameters.env.toUpperCase()}", Is(json!("PROD"))),
        ],
    );
}

#[test]
fn list_map_and_scalar_methods() {
    check_table(
        &sample_root(),
        &[
            ("${list.size()}", Is(json!(3))),
            ("${list.isEmpty()}", Is(json!(false))),
            ("${{}.isEmpty()}", Is(json!(true))),
            ("${list.contains(1)}", Is(json!(true))),
            ("${list.contains(1.0)}", Is(json!(true))),
            ("${list.contains('1')}", Is(json!(false))),
            ("${names.contains('beta')}", Is(json!(true))),
            ("${list.get(0)}", Is(json!(3))),
            (
                "${list.get(5)}",
                Fails("index 5 is out of bounds for a list of length 3"),
            ),
            ("${list.get('0')}", Fails("must be an integer")),
            ("${list.indexOf(2)}", Is(json!(2))),
            ("${list.indexOf(9)}", Is(json!(-1))),
            ("${list.toString()}", Is(json!("[3,1,2]"))),
            ("${list.equals({3, 1, 2})}", Is(json!(true))),
            (
                "${list.keySet()}",
                Fails(
                    "a list has no method 'keySet' at position 2 (`list.keySet()`); its methods are: contains, equals, get, indexOf, isEmpty, size, toString",
                ),
            ),
            ("${list.size(1)}", Fails("takes 0 argument(s), got 1")),
            ("${{1, 2}.get(1)}", Is(json!(2))),
            ("${map.size()}", Is(json!(3))),
            ("${map.isEmpty()}", Is(json!(false))),
            ("${{:}.isEmpty()}", Is(json!(true))),
            ("${map.containsKey('a')}", Is(json!(true))),
            ("${map.containsKey('c')}", Is(json!(true))),
            ("${map.containsKey('z')}", Is(json!(false))),
            ("${map.containsValue('two')}", Is(json!(true))),
            ("${map.containsValue(2)}", Is(json!(false))),
            ("${map.get('b')}", Is(json!("two"))),
            ("${map.get('z')}", Is(json!(null))),
            ("${{a: {b: 1}}.get('a').b}", Is(json!(1))),
            ("${map.keySet()}", Is(json!(["a", "b", "c"]))),
            ("${map.values()}", Is(json!([1, "two", null]))),
            ("${map.length()}", Fails("a map has no method 'length'")),
            (
                "${map.containsKey(list)}",
                Fails("a map key must be a string"),
            ),
            ("${n.toString()}", Is(json!("7"))),
            ("${f.toString() + 'x'}", Is(json!("2.5x"))),
            ("${t.toString()}", Is(json!("true"))),
            ("${t.equals(true)}", Is(json!(true))),
            ("${n.equals(7.0)}", Is(json!(true))),
            (
                "${n.size()}",
                Fails(
                    "a number has no method 'size' at position 2 (`n.size()`); its methods are: equals, toString",
                ),
            ),
            (
                "${t.contains('x')}",
                Fails("a boolean has no method 'contains'"),
            ),
        ],
    );
}

#[test]
fn helpers() {
    check_table(
        &sample_root(),
        &[
            ("${#stage('Deploy to QA').status}", Is(json!("SUCCEEDED"))),
            ("${#stage('01HQA').refId}", Is(json!("2"))),
            (
                "${#stage('Deploy to QA').outputs.instanceCount}",
                Is(json!(2)),
            ),
            (
                "${#stage('Nope')}",
                Fails(
                    "#stage failed at position 2 (`#stage('Nope')`): no stage named 'Nope' in this execution",
                ),
            ),
            ("${#stage(1)}", Fails("bad arguments to #stage")),
            ("${#stageByRefId('2').name}", Is(json!("Deploy to QA"))),
            ("${#stageByRefId('99')}", Fails("no stage with refId '99'")),
            ("${#currentStage().name}", Is(json!("Current"))),
            ("${#stageExists('Bake')}", Is(json!(true))),
            ("${#stageExists('Nope')}", Is(json!(false))),
            ("${#judgment('Approve')}", Is(json!("yes"))),
            ("${#judgement('Approve')}", Is(json!("yes"))),
            ("${#judgment('Nope')}", Fails("#judgment failed")),
            (
                "${#toJson(map)}",
                Is(json!(r#"{"a":1,"b":"two","c":null}"#)),
            ),
            ("${#toJson(list)}", Is(json!("[3,1,2]"))),
            ("${#toJson('x')}", Is(json!("\"x\""))),
            (
                "${#toJson({'x': '${y}'})}",
                Fails("#toJson result contains '${'"),
            ),
            ("${#readJson('{\"a\": [1, 2]}').a[1]}", Is(json!(2))),
            (
                "${#readJson('[1')}",
                Fails("#readJson failed at position 2 (`#readJson('[1')`): invalid JSON"),
            ),
            ("${#readJson(1)}", Fails("argument 1 must be a string")),
            (
                "${#readYaml('a: 1\nb: [x, y]')}",
                Is(json!({"a": 1, "b": ["x", "y"]})),
            ),
            ("${#readYaml('a: !custom x')}", Fails("#readYaml failed")),
            ("${#toInt('42')}", Is(json!(42))),
            ("${#toInt('-42')}", Is(json!(-42))),
            ("${#toInt(parameters.replicas) + 1}", Is(json!(4))),
            ("${#toInt('4.2')}", Fails("'4.2' is not an integer")),
            ("${#toInt(' 4')}", Fails("not an integer")),
            ("${#toInt(5)}", Is(json!(5))),
            ("${#toInt(2.5)}", Fails("the number 2.5 is not an integer")),
            ("${#toInt(nil)}", Fails("cannot convert null to an integer")),
            ("${#toFloat('2.5')}", Is(json!(2.5))),
            ("${#toFloat(2)}", Is(json!(2.0))),
            ("${#toFloat('x')}", Fails("'x' is not a number")),
            ("${#toFloat('1e999')}", Fails("not a finite number")),
            ("${#toBoolean('TRUE')}", Is(json!(true))),
            ("${#toBoolean('yes')}", Is(json!(false))),
            ("${#toBoolean(null)}", Is(json!(false))),
            ("${#toBoolean(true)}", Is(json!(true))),
            (
                "${#toBoolean(1)}",
                Fails("cannot convert the number 1 to a boolean"),
            ),
            ("${#toBase64('hello')}", Is(json!("aGVsbG8="))),
            ("${#fromBase64('aGVsbG8=')}", Is(json!("hello"))),
            (
                "${#fromBase64(#toBase64('héllo ${x}'))}",
                Is(json!("héllo ${x}")),
            ),
            ("${#fromBase64('!!')}", Fails("invalid base64")),
            ("${#fromBase64('/w==')}", Fails("not UTF-8")),
            ("${#alphanumerical('my-app_v1.2!')}", Is(json!("myappv12"))),
            ("${#currentUser()}", Is(json!("alice"))),
            (
                "${#fromUrl('https://allowed.example/text')}",
                Is(json!("hello")),
            ),
            (
                "${#jsonFromUrl('https://allowed.example/config.json').list[1]}",
                Is(json!(2)),
            ),
            (
                "${#jsonFromUrl('https://allowed.example/text')}",
                Fails("invalid JSON"),
            ),
            (
                "${#fromUrl('http://evil.example/')}",
                Fails("#fromUrl('http://evil.example/') failed at position 2"),
            ),
            (
                "${#deployedServerGroups()[0].serverGroup}",
                Is(json!("app-qa-v003")),
            ),
            (
                "${#deployedServerGroups('Deploy to QA').size()}",
                Is(json!(1)),
            ),
            (
                "${#deployedServerGroups('Nope')}",
                Fails("no deployed server groups are known for stage 'Nope'"),
            ),
            (
                "${#manifestLabelValue('Deploy', 'replicaSet', 'app')}",
                Is(json!("frontend")),
            ),
            (
                "${#manifestLabelValue('Deploy', 'replicaSet', 'x')}",
                Fails("no label 'x' on a replicaSet deployed by stage 'Deploy'"),
            ),
            (
                "${#triggerResolvedArtifact('image').reference}",
                Is(json!("gcr.io/x/app:1.2")),
            ),
            (
                "${#triggerResolvedArtifact('x')}",
                Fails("the trigger has no resolved artifact named 'x'"),
            ),
            (
                "${#toInt()}",
                Fails("parse: helper '#toInt' takes 1 argument but was given 0"),
            ),
            (
                "${#currentUser(1)}",
                Fails("parse: helper '#currentUser' takes no arguments but was given 1"),
            ),
            (
                "${#nope(1)}",
                Fails(
                    "parse: unknown helper function '#nope' at position 2; known helpers: #alphanumerical",
                ),
            ),
        ],
    );
}

#[test]
fn null_host_helpers_fail_cleanly() {
    let root = sample_root();
    let cases = [
        ("${#stage('Deploy')}", Err("no stage named 'Deploy'")),
        ("${#currentStage()}", Err("there is no current stage")),
        (
            "${#judgment('x')}",
            Err("no manual judgment stage named 'x'"),
        ),
        (
            "${#deployedServerGroups()}",
            Err("no deployed server groups are known for this execution"),
        ),
        (
            "${#fromUrl('https://allowed.example/text')}",
            Err("no hosts are allow-listed for #fromUrl"),
        ),
        ("${#currentUser()}", Ok(json!("anonymous"))),
        ("${#stageExists('x')}", Ok(json!(false))),
    ];
    for (src, want) in cases {
        let got = crate::tests_language::run_with(src, &root, &NullHost);
        match want {
            Ok(v) => assert_eq!(got, Ok(v), "{src}"),
            Err(w) => assert!(got.as_ref().is_err_and(|e| e.contains(w)), "{src}: {got:?}"),
        }
    }
}
