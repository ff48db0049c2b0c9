using System.Diagnostics;
using System.Text;
using System.Text.Json;
using NegDistill.Checkpoints;
using NegDistill.Data.Synthetic;
using NegDistill.Method;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Tests;

/// <summary>
/// Issue #16: every failure of the real `negdistill` process is a clean, named error: the exit code of
/// its class (the README's table), the culprit named (option, field, file, line, tensor, step), no
/// "Unhandled exception" and no stack trace on stdout or stderr, and nothing left behind.
/// </summary>
[TestFixture]
public class FailureTests
{
    string _dir = "", _base = "", _teacher = "", _gsm8k = "";

    [OneTimeSetUp]
    public void WriteInputs()
    {
        _dir = FrontEndTests.TempDir();
        _base = WriteBase("base", _ => { });
        _teacher = Path.Combine(_dir, "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(_teacher, seed: 3, from: 0, count: 6);
        _gsm8k = FrontEndTests.WriteGsm8k(_dir, 2);
    }

    /// <summary>A byte-level tiny base in its own folder, after <paramref name="edit"/> changed its weights.</summary>
    string WriteBase(string name, Action<LlamaModel> edit)
    {
        string dir = Path.Combine(_dir, name);
        using var m = new LlamaModel(new CpuBackend(), FrontEndTests.ByteTiny, DType.F32, seed: 1);
        edit(m);
        ModelIO.SaveBase(m, dir);
        return dir;
    }

    /// <summary>A copy of the good base with one side file replaced.</summary>
    string BaseWith(string name, string file, string content)
    {
        string dir = Path.Combine(_dir, name);
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(_base)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
        File.WriteAllText(Path.Combine(dir, file), content);
        return dir;
    }

    /// <summary>`train neg` on a tiny run; <paramref name="more"/> (option, value pairs or flags) replace the defaults.</summary>
    string[] Train(string baseDir, string outName, params string[] more)
    {
        var options = new List<(string Name, string? Value)>
        {
            ("--base", baseDir), ("--data", _teacher), ("--out", Path.Combine(_dir, outName)), ("--steps", "2"), ("--micro-batch", "2"),
            ("--effective-batch", "2"), ("--cutoff", "64"), ("--lr", "0.001"),
        };
        for (int i = 0; i < more.Length; i++)
        {
            string? value = i + 1 < more.Length && !more[i + 1].StartsWith("--", StringComparison.Ordinal) ? more[++i] : null;
            options.RemoveAll(o => o.Name == more[value == null ? i : i - 1]);
            options.Add((more[value == null ? i : i - 1], value));
        }
        return ["train", "neg", .. options.SelectMany(o => o.Value == null ? new[] { o.Name } : [o.Name, o.Value])];
    }

    string[] Sample(string outName, params string[] more) =>
        ["sample", "--base", _base, "--data", _gsm8k, "--task", "gsm8k", "--n", "2", "--max-new", "4", "--out", Path.Combine(_dir, outName), .. more];

    /// <summary>Runs the CLI and checks the exit code, that every culprit is named, and that no stack trace shows.</summary>
    static string Expect(string[] args, int code, params string[] culprits) => Check(FrontEndTests.RunCli(args, killWhen: null), args, code, culprits);

    static string Check((int Rc, bool Killed, string Log) r, string[] args, int code, string[] culprits)
    {
        string what = $"negdistill {string.Join(' ', args)}\n{r.Log}";
        Assert.That(r.Rc, Is.EqualTo(code), what);
        foreach (var c in culprits) Assert.That(r.Log, Does.Contain(c), what);
        Assert.That(r.Log, Does.Not.Contain("Unhandled exception"), what);
        Assert.That(r.Log, Does.Not.Match(@"\n\s+at [\w.`<>]+\("), "no stack trace: " + what);
        return r.Log;
    }

    // ---------------------------------------------------------------- 1. non-finite values in training

    [Test]
    public void NonFinite_StopsNamingStepMicroBatchIndexAndTensor_KeepingTheLastGoodCheckpoint()
    {
        // a NaN in a frozen base weight: found at the first step, named as the parameter it is
        string nanBase = WriteBase("base-nan", m =>
        {
            var w = TestUtil.Get(m.Ops, m.Layers[1].Wq.W); w[7] = float.NaN; m.Ops.Upload(m.Layers[1].Wq.W, w);
        });
        Expect(Train(nanBase, "t-nan"), ExitCodes.NonFinite,
            "non-finite values: step 1, micro-batch 0 (data index 0): the loss is NaN", "parameter model.layers.1.self_attn.q_proj.weight",
            "nothing was trained yet");

        // a learning rate that blows the LoRA up: step 1 is good, step 2's forward overflows
        string outDir = Path.Combine(_dir, "t-lr");
        Expect(Train(_base, "t-lr", "--lr", "1e38", "--steps", "4", "--warmup", "0"), ExitCodes.NonFinite,
            "step 2, micro-batch 0 (data index 1)", "first non-finite tensor: activation", "holds step 1, the last good one");
        using (var state = SafeTensors.Open(Path.Combine(outDir, "neg", Trainer.StateFile)))
            Assert.That(state.Metadata["step"], Is.EqualTo("1"));
        Assert.That(File.ReadAllLines(Path.Combine(outDir, "neg", Trainer.MetricsFile)), Has.Length.EqualTo(1), "the failed step is not logged");

        // a non-finite setting never starts
        Expect(Train(_base, "t-alpha", "--lora-alpha", "NaN"), ExitCodes.BadInput, "--lora-alpha: must be a positive number (got NaN)");
        Assert.That(Directory.Exists(Path.Combine(_dir, "t-alpha")), Is.False, "refused before any work");
    }

    // ---------------------------------------------------------------- 2. file-system faults

    [Test]
    public void FileSystemFaults_SayWhatCouldNotBeWritten_AndLeaveNoTemporaryFile()
    {
        string file = Path.Combine(_dir, "a-file");
        File.WriteAllText(file, "x");
        Expect(Train(_base, "unused", "--out", file), ExitCodes.BadInput, $"--out: '{file}' is a file");

        // an output folder that cannot be created (sysfs refuses new entries, as a read-only file system would)
        Expect(Train(_base, "unused", "--out", "/sys/negdistill-cannot-write"), ExitCodes.Storage,
            "file system: --out /sys/negdistill-cannot-write: cannot write there");

        // the disk fills up while the first checkpoint is written: files are limited to 16 KiB, the
        // metrics stay below that and the checkpoint (about 24 KiB) does not
        string outDir = Path.Combine(_dir, "t-full");
        var args = Train(_base, "t-full", "--steps", "4", "--checkpoint-every", "2");
        string log = Check(RunLimited(args, fileSizeKib: 16), args, ExitCodes.Storage,
            ["file system: cannot write", Path.Combine(outDir, "neg", Trainer.StateFile), "larger than the file system allows"]);
        Assert.That(Directory.GetFiles(Path.Combine(outDir, "neg")).Select(Path.GetFileName), Is.EquivalentTo(new[] { Trainer.MetricsFile }),
            "no temporary file and no partial checkpoint is left:\n" + log);
    }

    /// <summary>The CLI with every file it writes limited to <paramref name="fileSizeKib"/> KiB (writes past it
    /// fail with EFBIG, as on a full disk; SIGXFSZ is ignored so the write returns the error).</summary>
    static (int Rc, bool Killed, string Log) RunLimited(string[] args, int fileSizeKib)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "negdistill.dll");
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.Environment["DOTNET_EnableWriteXorExecute"] = "0";   // the runtime's double-mapped code file would exceed the limit itself
        foreach (var a in new[] { "-c", $"trap '' XFSZ; ulimit -f {fileSizeKib}; exec dotnet \"$0\" \"$@\"", dll }.Concat(args)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.That(p.WaitForExit(120_000), Is.True, "negdistill did not finish");
        return (p.ExitCode, false, output + err.Result);
    }

    // ---------------------------------------------------------------- 3. malformed side files

    [Test]
    public void MalformedSideFiles_AreNamedWithTheirFieldOrLine()
    {
        string notJson = BaseWith("b-notjson", "config.json", "{ hidden_size: 32");
        Expect(Train(notJson, "x"), ExitCodes.BadInput, Path.Combine(notJson, "config.json"));

        var cfg = JsonSerializer.Deserialize<Dictionary<string, object>>(File.ReadAllText(Path.Combine(_base, "config.json")))!;
        cfg["num_hidden_layers"] = "four";
        string wrongType = BaseWith("b-type", "config.json", JsonSerializer.Serialize(cfg));
        Expect(Train(wrongType, "x"), ExitCodes.BadInput, Path.Combine(wrongType, "config.json") + ": num_hidden_layers:");
        cfg["num_hidden_layers"] = 0;
        string zero = BaseWith("b-zero", "config.json", JsonSerializer.Serialize(cfg));
        Expect(Train(zero, "x"), ExitCodes.BadInput, Path.Combine(zero, "config.json") + ": config: every size must be positive");

        string corruptTok = BaseWith("b-tok", "tokenizer.model", "\x0A\x05\x01 not a protobuf");
        Expect(Train(corruptTok, "x"), ExitCodes.BadInput, Path.Combine(corruptTok, "tokenizer.model") + ": not a usable tokenizer");
        string bigTok = BaseWith("b-bigtok", "tokenizer.json", TokenizerJson(extraPieces: 5));   // 264 ids, the embedding has 259 rows
        Expect(Train(bigTok, "x"), ExitCodes.BadInput, Path.Combine(bigTok, "tokenizer.json") + ": the tokenizer has 264 ids but config.json's vocab_size is 259");

        // teacher data whose split has no negative pair: neg is refused before its plan, not by the trainer
        string onlyPos = Path.Combine(_dir, "only-positive.jsonl");
        File.WriteAllText(onlyPos, "garbage\n" + JsonSerializer.Serialize(new { question = "Problem:\nq", answer = "\\boxed{1}", generated_answer = new[] { "Solution:\n\\boxed{1}" }, level = "Level 1", type = "Algebra" }) + "\n");
        string log = Expect(Train(_base, "x-data", "--data", onlyPos), ExitCodes.BadInput, $"stage 'neg' trains on D_neg (the rationales the checker rejects), and the split of {onlyPos} has none");
        Assert.That(log, Does.Contain("malformed").And.Not.Contain("memory plan"));

        string cands = Path.Combine(_dir, "bad-utf8.jsonl");
        File.WriteAllBytes(cands, [.. "{\"question_id\":\"q\u00e9\""u8.ToArray().Select(b => b == 0xC3 ? (byte)0xFF : b), (byte)'}', (byte)'\n']);
        Expect(["vote", "sc", "--candidates", cands, "--data", _gsm8k, "--task", "gsm8k"], ExitCodes.BadInput, $"{cands}:1: invalid UTF-8 at byte");
    }

    /// <summary>A Hugging Face BPE tokenizer.json with byte fallback: 3 specials, 256 bytes, "▁" and <paramref name="extraPieces"/> letters.</summary>
    static string TokenizerJson(int extraPieces)
    {
        var vocab = new List<string> { "<unk>", "<s>", "</s>" };
        vocab.AddRange(Enumerable.Range(0, 256).Select(b => $"<0x{b:X2}>"));
        vocab.Add("▁");
        vocab.AddRange(Enumerable.Range(0, extraPieces - 1).Select(i => ((char)('a' + i)).ToString()));
        return JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["version"] = "1.0",
            ["added_tokens"] = new object[] { new { id = 0, content = "<unk>", special = true }, new { id = 1, content = "<s>", special = true }, new { id = 2, content = "</s>", special = true } },
            ["normalizer"] = new { type = "Sequence", normalizers = new object[] { new { type = "Prepend", prepend = "▁" }, new { type = "Replace", pattern = new { String = " " }, content = "▁" } } },
            ["pre_tokenizer"] = null,
            ["model"] = new Dictionary<string, object?>
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["byte_fallback"] = true,
                ["vocab"] = vocab.Select((p, i) => (p, i)).ToDictionary(x => x.p, x => x.i), ["merges"] = Array.Empty<string>(),
            },
        });
    }

    // ---------------------------------------------------------------- 4, 5. refused, and before any work

    [Test]
    public void ValuesThatWereAccepted_AreRefusedBeforeAnyWork_UnderTheNameTyped()
    {
        Expect(Sample("s1", "--temperature", "-1"), ExitCodes.BadInput, "--temperature: must be a positive number (got -1)");
        Expect(Sample("s2", "--temperature", "NaN"), ExitCodes.BadInput, "--temperature: must be a positive number (got NaN)");
        Expect(Sample("s3", "--limit", "-1"), ExitCodes.BadInput, "--limit: must be 0 (every question) or positive (got -1)");
        foreach (var s in new[] { "s1", "s2", "s3" }) Assert.That(Directory.Exists(Path.Combine(_dir, s)), Is.False, s);
        string empty = Path.Combine(_dir, "empty.jsonl");
        File.WriteAllText(empty, "");
        Expect(["vote", "sc", "--candidates", empty, "--data", _gsm8k, "--task", "gsm8k"], ExitCodes.BadInput, $"{empty}: no candidates");
        Expect(["vote", "sc", "--candidates", empty, "--data", _gsm8k, "--task", "gsm8k", "--n", "0"], ExitCodes.BadInput, "--n: must be positive (got 0)");
        Expect(["vote", "sc", "--candidates", empty, "--data", _gsm8k, "--task", "gsm8k", "--n", "-3"], ExitCodes.BadInput, "--n: must be positive (got -3)");
        string plan = Expect(["plan", "--batch", "-4"], ExitCodes.BadInput, "--batch: must be positive (got -4)");
        Assert.That(plan, Does.Not.Contain("fits"));
        Expect(Train(_base, "t4", "--checkpoint-every", "0"), ExitCodes.BadInput, "--checkpoint-every: must be positive (got 0)");
        Expect(Train(_base, "t4", "--lora-dropout", "1.5"), ExitCodes.BadInput, "--lora-dropout: must be in [0, 1) (got 1.5)");
        Expect(Train(_base, "t4", "--warmup", "-2", "--device", "tpu"), ExitCodes.BadInput, "--warmup: must be 0 (no warm-up) or positive (got -2)", "--device: unknown device 'tpu'");
        Assert.That(Directory.Exists(Path.Combine(_dir, "t4")), Is.False, "refused before any work");

        // the pipeline config: every late value named by its field, all at once, before the first byte of work
        string outDir = Path.Combine(_dir, "p-late");
        string config = Path.Combine(_dir, "late.json");
        File.WriteAllText(config, $$"""
            { "base": "{{_base}}", "teacher_data": "{{_teacher}}", "out": "{{outDir}}", "device": "tpu", "stages": ["neg", "kd", "neg"],
              "train": { "warmup_steps": -1, "checkpoint_every": 0 },
              "eval": { "data": "{{_gsm8k}}", "task": "gsm8k", "student": "kd", "temperature": -1, "limit": -1 } }
            """);
        Expect(["pipeline", config], ExitCodes.BadInput, $"{config}: invalid config", "device: unknown device 'tpu'", "stages: 'neg' is named twice",
            "train.warmup_steps: must be 0", "train.checkpoint_every: must be positive", "eval.temperature: must be a positive number", "eval.limit: must be 0");
        Assert.That(Directory.Exists(outDir), Is.False, "nothing was written");
    }

    // ---------------------------------------------------------------- 6. leftovers after faults

    /// <summary>`demo` resumes only its own run: a folder of another run (other settings, an older version's files)
    /// is refused before any work, naming what differs, and nothing in it is touched.</summary>
    [Test]
    public void Demo_RefusesToResumeAFolderOfAnotherRun_NamingWhatDiffers()
    {
        string old = Path.Combine(_dir, "demo-old");
        Directory.CreateDirectory(Path.Combine(old, "base"));
        File.WriteAllText(Path.Combine(old, "base", "config.json"), "{}");
        Expect(["demo", "--quick", "--out", old], ExitCodes.BadInput, $"--out: {old} is not empty and has no demo.json");
        Assert.That(Directory.GetFileSystemEntries(old), Has.Length.EqualTo(1), "nothing written or removed");

        // a stamp of the quick run with one setting changed, as a full run or another --seed would leave
        string other = Path.Combine(_dir, "demo-other");
        var settings = new NegDistill.Method.Testbed.TestbedSettings { Out = other, Quick = true }.Resolve();
        NegDistill.Method.Testbed.Testbed.RequireSameRun(settings with { Dim = 128, Seed = 9 });
        string stamp = File.ReadAllText(Path.Combine(other, "demo.json"));
        Expect(["demo", "--quick", "--out", other], ExitCodes.BadInput, "holds a demo run with other settings", "Dim 128 there, 64 here", "Seed 9 there, 1 here");
        Assert.That(File.ReadAllText(Path.Combine(other, "demo.json")), Is.EqualTo(stamp), "the stamp is left as it was");
        Assert.That(Directory.GetFileSystemEntries(other), Has.Length.EqualTo(1));

        // the same settings resume: the check passes and leaves the stamp as it is
        NegDistill.Method.Testbed.Testbed.RequireSameRun(settings with { Dim = 128, Seed = 9 });
        Assert.That(File.ReadAllText(Path.Combine(other, "demo.json")), Is.EqualTo(stamp));
    }

    [Test]
    public void AfterAKill_StaleTemporariesAreSwept_AndEveryStepIsLoggedOnce()
    {
        string outDir = Path.Combine(_dir, "t-left"), stage = Path.Combine(outDir, "neg");
        Expect(Train(_base, "t-left", "--checkpoint-every", "1"), ExitCodes.Ok);
        // as a run killed after step 3 (checkpoint at 2) while writing a checkpoint would leave it:
        Directory.Delete(Path.Combine(stage, "adapter"), recursive: true);
        string metrics = Path.Combine(stage, Trainer.MetricsFile);
        var lines = File.ReadAllLines(metrics);
        File.AppendAllText(metrics, lines[1].Replace("\"step\":2", "\"step\":3") + "\n" + lines[1][..20]);   // step 3, then a line cut off
        string stale = Path.Combine(stage, $".{Trainer.StateFile}.~0123456789abcdef0123456789abcdef.tmp");
        File.WriteAllBytes(stale, new byte[100]);
        Expect(Train(_base, "t-left", "--checkpoint-every", "1", "--steps", "4"), ExitCodes.Ok);
        Assert.That(File.Exists(stale), Is.False, "the stale temporary is swept at start");
        var steps = File.ReadAllLines(metrics).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("step").GetInt32()).ToList();
        Assert.That(steps, Is.EqualTo(new[] { 1, 2, 3, 4 }), "each step once, after resuming from step 2");
    }

    // ---------------------------------------------------------------- 7. exit codes and words

    [Test]
    public void ParseErrorsExit2_AndMessagesNameTheOptionTyped()
    {
        Expect(["trian", "neg"], ExitCodes.BadInput, "trian");
        Expect(Train(_base, "x", "--micro-btach", "4"), ExitCodes.BadInput, "--micro-btach");
        string log = Expect(Train(_base, "x7", "--micro-batch", "0"), ExitCodes.BadInput, "--micro-batch: must be positive (got 0)");
        Assert.That(log, Does.Not.Contain("BatchSize").And.Not.Contain("Parameter 'options'"));
        log = Expect(Train(_base, "x7", "--cutoff", "1"), ExitCodes.BadInput, "--cutoff: must be at least 8 tokens (got 1)");
        Assert.That(log, Does.Not.Contain("CutoffLength"));
        Expect(Train(_base, "x7", "--micro-batch", "3", "--effective-batch", "4"), ExitCodes.BadInput, "--effective-batch: must be a positive multiple of --micro-batch (3)");
        // a device that is not there (CUDA hidden from the process, whatever the machine has)
        var env = new Dictionary<string, string> { ["CUDA_VISIBLE_DEVICES"] = "-1" };
        var args = Train(_base, "x-dev", "--device", "cuda");
        Check(RunWithEnv(args, env), args, ExitCodes.DeviceUnavailable, ["device unavailable: --device cuda: no CUDA device found", "CUDA driver library"]);
    }

    static (int Rc, bool Killed, string Log) RunWithEnv(string[] args, Dictionary<string, string> env)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "negdistill.dll") }.Concat(args)) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.That(p.WaitForExit(120_000), Is.True);
        return (p.ExitCode, false, output + err.Result);
    }

    [Test]
    public void AnUnexpectedFailure_IsOneLinePointingAtALogWithTheStackTrace()
    {
        string logDir = Path.Combine(_dir, "logs");
        Exception thrown;
        try { throw new InvalidOperationException("the unforeseen"); }
        catch (InvalidOperationException e) { thrown = e; }
        var err = new StringWriter();
        int code = Failures.Report(thrown, err, TextWriter.Null, logDir);
        Assert.That(code, Is.EqualTo(ExitCodes.Failure));
        var lines = err.ToString().TrimEnd().Split('\n');
        Assert.That(lines, Has.Length.EqualTo(1));
        Assert.That(lines[0], Does.StartWith("negdistill: unexpected error (InvalidOperationException: the unforeseen); the stack trace is in " + logDir));
        string log = Directory.GetFiles(logDir).Single();
        Assert.That(File.ReadAllText(log), Does.Contain("the unforeseen").And.Contain(nameof(AnUnexpectedFailure_IsOneLinePointingAtALogWithTheStackTrace)));
        // the classes above are not the last resort's
        foreach (var e in new Exception[] { new NonFiniteException("x"), new IOException("x"), new PlanDoesNotFitException("x"), new DeviceUnavailableException("x"),
                                            new Method.Settings.SettingsException(null, ["x"]), new StageInterrupted("neg", 3), new AggregateException(new NonFiniteException("y")) })
            Assert.That(Failures.Classify(e), Is.Not.Null, e.GetType().Name);
        Assert.That(Failures.Classify(new ArgumentNullException("p")), Is.Null, "a null argument is a bug, not bad input");
    }
}
