using System.CommandLine;
using NegDistill.Data.Evaluation;
using NegDistill.Method;
using NegDistill.Method.Settings;

namespace NegDistill.Cli;

/// <summary>
/// `negdistill sample`, `eval` and `vote`: N sampled candidates per question of MATH (per subject, the
/// paper's layout) or GSM8K from a base model plus an optional adapter folder (a LoRA or NAT, loaded
/// as what it holds), saved as JSONL (an interrupted run resumes from them) and scored by an optional
/// ranking model; SC / WS / ASC accuracy from the saved candidates; `eval` does both and adds greedy.
/// </summary>
static class EvalVerbs
{
    static readonly SettingInfo BaseKey = RunSettings.Keys.Base;
    static readonly SettingInfo AdapterKey = new("--adapter", null, "student adapter folder to apply: a LoRA, or NAT (LoRA_neg + LoRA_pos + integration unit), as the folder holds");
    static readonly SettingInfo RankKey = new("--rank", null, "ranking model folder (LoRA + score_head.safetensors): scores every candidate for ASC");
    static readonly SettingInfo OutKey = new("--out", null, "output folder");
    static readonly SettingInfo SeedKey = new("--seed", null, "sampling seed");

    /// <summary>What `sample` and `eval` are given on the command line.</summary>
    sealed record Job
    {
        public string Base { get; init; } = "";
        public string? Adapter { get; init; }
        public string? Rank { get; init; }
        public string Out { get; init; } = "runs/eval";
        public ulong Seed { get; init; } = 1;
    }

    static (Bound<Job>, Bound<EvalSettings>, Bound<DeviceSettings>) Options(Command cmd)
    {
        var job = new Bound<Job>(new Job());
        job.Add(cmd, BaseKey, s => s.Base, (s, v) => s with { Base = v }, required: true);
        job.Add(cmd, AdapterKey, s => s.Adapter, (s, v) => s with { Adapter = v });
        job.Add(cmd, RankKey, s => s.Rank, (s, v) => s with { Rank = v });
        job.Add(cmd, OutKey, s => s.Out, (s, v) => s with { Out = v });
        job.Add(cmd, SeedKey, s => s.Seed, (s, v) => s with { Seed = v });
        var eval = new Bound<EvalSettings>(new EvalSettings());
        eval.Add(cmd, EvalSettings.Keys.Data, s => s.Data, (s, v) => s with { Data = v }, required: true);
        AddVoteOptions(cmd, eval);
        eval.Add(cmd, EvalSettings.Keys.MaxNewTokens, s => s.MaxNewTokens, (s, v) => s with { MaxNewTokens = v });
        eval.Add(cmd, EvalSettings.Keys.Temperature, s => s.Temperature, (s, v) => s with { Temperature = v });
        eval.Add(cmd, EvalSettings.Keys.Slots, s => s.Slots, (s, v) => s with { Slots = v });
        eval.Add(cmd, EvalSettings.Keys.KvCache, s => s.KvCache, (s, v) => s with { KvCache = v });
        eval.Add(cmd, EvalSettings.Keys.SharePrompt, s => s.SharePrompt, (s, v) => s with { SharePrompt = v });
        return (job, eval, TrainVerb.DeviceOptions(cmd));
    }

    static void AddVoteOptions(Command cmd, Bound<EvalSettings> eval)
    {
        eval.Add(cmd, EvalSettings.Keys.Task, s => s.Task, (s, v) => s with { Task = v });
        eval.Add(cmd, EvalSettings.Keys.N, s => s.N, (s, v) => s with { N = v });
        eval.Add(cmd, EvalSettings.Keys.Limit, s => s.Limit, (s, v) => s with { Limit = v });
    }

    public static IEnumerable<Command> Build()
    {
        var sample = new Command("sample", "Sample N candidates per question (KV cache, continuous batching) into OUT/LABEL.candidates.jsonl, resuming a partial file; with --rank also OUT/LABEL.candidates.scored.jsonl. Prints the memory plan first.");
        var (sj, se, sd) = Options(sample);
        sample.SetAction(r => Cli.Guarded(_ => Sample(sj.Bind(r), se.Bind(r), sd.Bind(r), Cli.Console)));
        yield return sample;

        var eval = new Command("eval", "Greedy and SC / WS / ASC accuracy of a model (+ adapter) on MATH (per subject) or GSM8K: sample, score with --rank, vote; tables and a plot under --out.");
        var (ej, ee, ed) = Options(eval);
        eval.SetAction(r => Cli.Guarded(_ => Eval(ej.Bind(r), ee.Bind(r), ed.Bind(r), Cli.Console)));
        yield return eval;

        var vote = new Command("vote", "SC, WS or ASC accuracy at N = 1, 2, 4, … from saved candidates (answers re-judged against --data's references).");
        var method = new Argument<string>("method") { Description = "sc | ws | asc (asc needs a *.candidates.scored.jsonl)" };
        var candidates = new Option<string>("--candidates") { Description = "candidates JSONL written by `sample` or `eval`", Required = true };
        vote.Arguments.Add(method);
        vote.Options.Add(candidates);
        var ve = new Bound<EvalSettings>(new EvalSettings());
        ve.Add(vote, EvalSettings.Keys.Data, s => s.Data, (s, v) => s with { Data = v }, required: true);
        AddVoteOptions(vote, ve);
        vote.SetAction(r => Cli.Guarded(_ => Vote(r.GetValue(method)!, r.GetValue(candidates)!, ve.Bind(r), Cli.Console)));
        yield return vote;
    }

    /// <summary>Every option checked, the folders inspected (what each holds), then the job.</summary>
    static (EvalJob Job, List<TestQuestion> Questions) Prepare(Job j, EvalSettings s, DeviceSettings d, IReporter report)
    {
        var check = new SettingsCheck(SettingSource.CommandLine);
        check.Require(File.Exists(Path.Combine(j.Base, "config.json")), BaseKey, $"'{j.Base}' has no config.json");
        check.Require(!File.Exists(j.Out), OutKey, $"'{j.Out}' is a file; the output must be a folder");
        s.Check(check);
        d.Check(check);
        check.ThrowIfAny();
        Pipeline.RequireWritable(j.Out, OutKey, SettingSource.CommandLine);
        var student = Evaluation.StudentFolder(j.Adapter, AdapterKey, SettingSource.CommandLine);
        var ranker = j.Rank == null ? null : Evaluation.RankerFolder(j.Rank, RankKey, SettingSource.CommandLine);
        var b = BaseModel.Open(j.Base);
        var questions = TestSet.Load(s.AnswerTask, s.Data!, s.Limit);
        var job = new EvalJob
        {
            Ops = Backends.Create(d.Device), Base = b, Student = student, Ranker = ranker, Settings = s, OutDir = j.Out, Seed = j.Seed,
            DeviceBytes = d.LimitBytes, Report = report,
        };
        return (job, questions);
    }

    static int Sample(Job j, EvalSettings s, DeviceSettings d, IReporter report)
    {
        var (job, questions) = Prepare(j, s, d, report);
        using var ops = job.Ops;
        var r = Evaluation.Sample(job, questions, greedy: false);
        foreach (var l in r.Log) report.Line(l);
        report.Line($"{r.Questions.Count * s.N} candidates in {r.Path}");
        return ExitCodes.Ok;
    }

    static int Eval(Job j, EvalSettings s, DeviceSettings d, IReporter report)
    {
        var (job, questions) = Prepare(j, s, d, report);
        using var ops = job.Ops;
        return Report(job, Evaluation.Evaluate(job, questions), report);
    }

    internal static int Report(EvalJob job, (Evaluation.Sampled Sampled, string Markdown) r, IReporter report)
    {
        foreach (var l in r.Sampled.Log) report.Line(l);
        report.Line(r.Markdown);
        report.Line($"candidates, table and plot under {job.OutDir}");
        return ExitCodes.Ok;
    }

    static int Vote(string method, string candidatesPath, EvalSettings s, IReporter report)
    {
        var check = new SettingsCheck(SettingSource.CommandLine);
        var vm = method switch { "sc" => VoteMethod.Sc, "ws" => VoteMethod.Ws, "asc" => VoteMethod.Asc, _ => (VoteMethod?)null };
        if (vm == null) check.Fail(new SettingInfo("method", null, ""), $"'{method}' is not sc, ws or asc");
        var candKey = new SettingInfo("--candidates", null, "");
        check.Require(File.Exists(candidatesPath), candKey, $"{candidatesPath} does not exist");
        s.Check(check);
        check.ThrowIfAny();
        var questions = TestSet.Load(s.AnswerTask, s.Data!, s.Limit);
        report.Line(Evaluation.Vote(vm!.Value, candidatesPath, s.AnswerTask, questions, s.N, $"--data {s.Data}"));
        return ExitCodes.Ok;
    }
}
