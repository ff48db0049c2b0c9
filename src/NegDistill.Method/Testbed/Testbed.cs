using System.Diagnostics;
using System.Globalization;
using System.Runtime.Intrinsics;
using System.Text;
using System.Text.Json;
using NegDistill.Data;
using NegDistill.Data.Evaluation;
using NegDistill.Data.Synthetic;
using NegDistill.Method.Settings;
using NegDistill.Method.Sources;
using NegDistill.Method.Stages;
using NegDistill.Model;
using NegDistill.Runtime;
using NegDistill.Train;

namespace NegDistill.Method.Testbed;

/// <summary>What results.json holds: every number of results.md, and where it came from.</summary>
public sealed record TestbedResults(string Date, string Command, string Machine, string Isa, double WallSeconds, ulong WorldSeed, ulong[] Seeds,
    int TestProblems, int TrainProblems, List<PremiseRow> Premise, List<MethodAccuracy> Accuracy, List<Intersection> IntersectionNegVsKd,
    RankResult Ranker, Dictionary<string, double[]> VotesMeanByN, List<PartTime> Times);

/// <summary>The ranking model on held-out rationales: accuracy at 0.5, AUC and its 95 % bootstrap interval.</summary>
public sealed record RankResult(double Accuracy, double Auc, double AucLo, double AucHi, int Rationales, int Positives);

public sealed record PartTime(string Part, double Seconds);

/// <summary>
/// The embedded default as a testbed (`negdistill demo`): the world and its teacher, the split, then for each
/// seed a base pretrained on gold solutions (one for all seeds with --shared-base) and every stage, baseline and
/// ablation trained from that base through <see cref="Pipeline.Run"/>, greedy accuracy of each on the same test problems, the NCE
/// student's candidates voted by SC, WS and ASC at every N, and the tables: accuracy with intervals and a
/// paired test against CoT KD, per level, the intersection analysis, the premise, the ranking model.
/// Every part is resumable (a rerun skips what is on disk).
/// </summary>
public static class Testbed
{
    /// <summary>The reference every method is compared with.</summary>
    public const string Reference = "kd";
    public const string BaseLabel = "base";

    /// <summary>The models the tables compare, in table order: (stage, label).</summary>
    public static readonly IReadOnlyList<(string Stage, string Label)> Models =
    [
        (BaseLabel, "base (pretrained, no distillation)"),
        ("kd", "CoT KD (LoRA on D_pos)"),
        ("mix", "MIX (LoRA on D_pos ∪ D_neg)"),
        ("ul", "UL (D_pos + unlikelihood on D_neg)"),
        ("nt", "NT (D_pos + negative training on D_neg)"),
        ("cl", "CL (D_pos + contrastive margin to D_neg)"),
        ("neg", "LoRA_neg alone (D_neg only)"),
        ("nat", "NAT (LoRA_neg + LoRA_pos + integration unit)"),
        ("nce", "NCE student (self-augmentation + calibrated KD from NAT)"),
        ("nat-noneg", "ablation: NAT without LoRA_neg"),
        ("nat-fixed", $"ablation: NAT with α fixed at {NatFixedAlphaStage.Alpha} (no attention)"),
        ("nce-beta0", "ablation: NCE with β = 0 (plain KD from NAT)"),
    ];

    /// <summary>A seed's stages in training order (each one's prerequisites before it). The ranking model is
    /// trained once, like the base, and serves every seed's votes.</summary>
    static Stage[] SeedStages() =>
        [new NegStage(), new NatStage(), new NatNoNegStage(), new NatFixedAlphaStage(), new NceStage(), new NceBeta0Stage(), new KdStage(), new MixStage(), new UlStage(), new NtStage(), new ClStage()];

    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    const AnswerTask Task = AnswerTask.Math;          // the exact MATH checker on the boxed answer, as the split judges
    const string Student = "nce";                     // whose candidates SC / WS / ASC vote over (the paper's)

    public static ulong[] RunSeeds(TestbedSettings s) => Enumerable.Range(0, s.Seeds).Select(i => s.Seed + (ulong)i).ToArray();

    /// <summary>The parts of a run and their estimated costs (training sequences, weighted by what a step of each kind costs), for the run-wide ETA.</summary>
    public static List<(string Part, double Cost)> Plan(TestbedSettings s)
    {
        // weights measured on the 2-core machine (README): time per training sequence relative to a CoT KD
        // step's, per test problem decoded greedily, per candidate sampled and scored
        double stage = s.StageSteps * s.MicroBatch, greedy = 0.85 * s.TestProblems, pretrain = 1.1 * s.PretrainSteps * s.PretrainBatch;
        var seeds = RunSeeds(s);
        var plan = new List<(string, double)> { (BasePart(s, seeds[0], "pretrain"), pretrain), (BasePart(s, seeds[0], "eval base"), greedy), ("ranker", 2.0 * s.RankSteps * s.MicroBatch) };
        foreach (ulong r in seeds)
        {
            if (!s.SharedBase && r != seeds[0]) { plan.Add((BasePart(s, r, "pretrain"), pretrain)); plan.Add((BasePart(s, r, "eval base"), greedy)); }
            foreach (var st in SeedStages())
                plan.Add(($"seed {r}: {st.Name}", st.Name switch
                {
                    "nat" or "nat-noneg" or "nat-fixed" => 2.5 * stage,
                    "nce" => 2.0 * stage + 0.5 * s.TrainProblems,
                    "nce-beta0" or "ul" or "nt" or "cl" => 1.6 * stage,
                    "neg" => 1.4 * stage,
                    _ => stage,
                }));
            plan.Add(($"seed {r}: eval", greedy * (Models.Count - 1)));
            plan.Add(($"seed {r}: votes", 1.45 * Math.Min(s.VoteProblems, s.TestProblems) * s.Samples));
        }
        return plan;
    }

    /// <summary>The name of a base's part in the plan: once for the run, or once per seed.</summary>
    static string BasePart(TestbedSettings s, ulong seed, string part) => s.SharedBase ? part : $"seed {seed}: {part}";

    /// <summary>The paper's ablations, each paired with the full method it removes a part from: (ablation, full).</summary>
    public static readonly IReadOnlyList<(string Ablation, string Full)> Ablations = [("nat-noneg", "nat"), ("nat-fixed", "nat"), ("nce-beta0", "nce"), ("nat", "kd"), ("nce", "nat")];

    public static int Run(TestbedSettings settings, DeviceSettings device, IReporter console, CancellationToken cancel)
    {
        var opt = settings.Resolve();
        var check = new SettingsCheck(SettingSource.CommandLine);
        opt.Check(check);
        device.Check(check);
        var train = opt.Stages;
        train.Check(check);
        check.ThrowIfAny();
        var wall = Stopwatch.StartNew();
        Pipeline.RequireWritable(opt.Out, TestbedSettings.Keys.Out, SettingSource.CommandLine);
        RequireSameRun(opt);
        var seeds = RunSeeds(opt);
        var report = new RunProgress(console, Plan(opt));
        var times = new List<PartTime>();
        report.Line($"NegDistill demo → {Path.GetFullPath(opt.Out)}  (device {device.Device}, world seed {opt.Seed}, run seeds {string.Join(", ", seeds)}{(opt.Quick ? ", quick" : "")}; {Machine()}, {Isa()})");

        // 1. the world, its teacher and the split
        var world = new TestbedWorld(opt.Seed, opt.TrainProblems, opt.PretrainSteps * opt.PretrainBatch, opt.TestProblems, opt.RankProblems, opt.PretrainMaxLevel);
        string teacherPath = Path.Combine(opt.Out, "data", "teacher.jsonl");
        ArithmeticWorld.WriteTeacherJsonl(teacherPath, opt.Seed, world.Train);
        var split = new DatasetSplitter().SplitPath(teacherPath);
        report.Line("");
        report.Line(SplitReport.Render(split.Summary, teacherPath));
        var premise = TestbedWorld.Premise(world.Train, opt.Seed).ToList();
        string premiseTable = TestbedReport.PremiseTable(premise);
        report.Line("The teacher's rationales by level (the paper's premise: positives scarcer on harder problems, negatives partly right):");
        report.Line(premiseTable);
        var held = new DatasetSplitter().Split(world.RankRecords);

        // 2. the tokenizer, the backend (once, for everything below) and the bases, pretrained on gold solutions
        var tok = new PhraseTokenizer(ArithmeticWorld.Phrases);
        var cfg = opt.Shape(tok.VocabSize);
        using var ops = Backends.Create(device.Device);
        var test = world.TestQuestions;
        var voted = test.Take(opt.VoteProblems).ToList();
        var level = world.Test.Select(p => p.Level).ToArray();
        // a base per seed (each seed a whole replicate: pretraining, stages, evaluation), or one for every seed
        var bases = new Dictionary<ulong, (BaseModel Model, bool[] Correct)>();
        (BaseModel Model, bool[] Correct) BaseOf(ulong seed)
        {
            if (bases.TryGetValue(opt.SharedBase ? seeds[0] : seed, out var have)) return have;
            ulong pretrainSeed = opt.SharedBase ? opt.Seed : seed;
            string root = opt.SharedBase ? opt.Out : Path.Combine(opt.Out, $"seed-{seed}");
            string baseDir = Path.Combine(root, "base");
            Timed(times, BasePart(opt, seed, "pretrain"), report, () =>
            {
                if (File.Exists(Path.Combine(baseDir, "config.json"))) { report.Line($"{baseDir}: complete, skipped"); return true; }
                Pretrain(opt, pretrainSeed, world, tok, cfg, ops, root, report, cancel);
                return false;
            });
            var model = BaseModel.Open(baseDir, minPositions: train.Cutoff);
            report.Line($"base: {cfg.ParameterCount:N0} parameters (dim {cfg.Dim}, {cfg.Layers} layers, {cfg.Heads} heads, FFN {cfg.FfnDim}, vocabulary {cfg.Vocab}: bytes + {tok.Phrases.Count} phrases), from {baseDir}");
            bool[] ok = [];
            string greedyPath = Path.Combine(root, "eval", "base.greedy.jsonl");
            Timed(times, BasePart(opt, seed, "eval base"), report, () =>
            {
                bool skip = GreedyDone(greedyPath, test);
                ok = Greedy(() => model.Load(ops, pretrainSeed), tok, test, opt.MaxNewTokens, greedyPath);
                return skip;
            });
            report.Line($"{BasePart(opt, seed, "base")} greedy accuracy: {100.0 * ok.Count(c => c) / test.Count:F1} % on {test.Count} test problems");
            return bases[opt.SharedBase ? seeds[0] : seed] = (model, ok);
        }
        var firstBase = BaseOf(seeds[0]).Model;

        // 3. the ranking model, once (on the first seed's base), judged on the teacher's rationales of problems outside the training data
        StageContext Context(ulong seed, string dir, BaseModel @base) => new()
        {
            Ops = ops, Base = @base, OutDir = dir, Report = report, Cancel = cancel,
            Batcher = new Batcher(tok, new BatchingOptions { CutoffLength = train.Cutoff, BatchSize = opt.MicroBatch, Seed = seed, LossMask = opt.StageLoss }),
            Loop = train.ForTrainer(seed), Lora = new LoraSettings().ToConfig(), Positives = split.Positives, Negatives = split.Negatives,
            TeacherData = teacherPath, AugmentQuestions = train.AugmentQuestions, AugmentMaxNewTokens = train.AugmentMaxNewTokens, CheckPlans = false,
        };
        var rankCtx = Context(opt.Seed, Path.Combine(opt.Out, "ranker"), firstBase);
        var rank = new RankStage(new RankStage.HeldOut(held.Positives, held.Negatives, $"rationales of {world.Rank.Count} problems outside the training data"), opt.RankSteps);
        Timed(times, "ranker", report, () =>
        {
            bool skip = rank.IsComplete(rankCtx);
            Pipeline.Run(rankCtx, [rank]);
            return skip;
        });
        var (rankScores, rankLabels) = rank.HeldOutScores!.Value;
        var (aucLo, aucHi) = Stats.AucInterval(rankScores.Select(x => (double)x).ToList(), rankLabels);
        var ranker = new RankResult(rank.HeldOutResult!.Value.Accuracy, rank.HeldOutResult.Value.Auc, aucLo, aucHi, rankLabels.Length, rankLabels.Count(l => l));
        var logs = rankCtx.Log.ToList();

        // 4. every stage, baseline and ablation, for each seed, from its base
        var correct = Models.ToDictionary(m => m.Stage, _ => new List<bool[]>());
        var curves = new Dictionary<VoteMethod, List<double[]>> { [VoteMethod.Sc] = [], [VoteMethod.Ws] = [], [VoteMethod.Asc] = [] };
        foreach (ulong seed in seeds)
        {
            var (seedBase, baseCorrect) = BaseOf(seed);
            var ctx = Context(seed, Path.Combine(opt.Out, $"seed-{seed}"), seedBase);
            foreach (var stage in SeedStages())
            {
                Timed(times, $"seed {seed}: {stage.Name}", report, () =>
                {
                    bool skip = stage.IsComplete(ctx);
                    Pipeline.Run(ctx, [stage]);
                    return skip;
                });
            }
            Timed(times, $"seed {seed}: eval", report, () =>
            {
                bool skip = true;
                correct[BaseLabel].Add(baseCorrect);
                foreach (var (stageName, _) in Models.Skip(1))
                {
                    string path = Path.Combine(ctx.Dir("eval"), $"{stageName}.greedy.jsonl");
                    skip &= GreedyDone(path, test);
                    var stage = StageCatalog.Find(stageName)!;
                    correct[stageName].Add(Greedy(() => stage.Load(ctx), tok, test, opt.MaxNewTokens, path));
                }
                report.Line($"seed {seed}: greedy accuracy % " + string.Join(", ", Models.Select(m => $"{m.Stage} {100.0 * correct[m.Stage][^1].Count(c => c) / test.Count:F1}")));
                return skip;
            });
            Timed(times, $"seed {seed}: votes", report, () =>
            {
                var job = new EvalJob
                {
                    Ops = ops, Base = seedBase, Student = StageCatalog.Find(Student)!.Result(ctx), Ranker = rank.Result(rankCtx), OutDir = ctx.Dir("votes"), Seed = seed, Label = Student,
                    Settings = new EvalSettings { Task = "math", N = opt.Samples, MaxNewTokens = opt.MaxNewTokens }, ScoreCutoff = train.Cutoff, ScoreBatch = 64, Report = report,
                };
                bool skip = File.Exists(Asc.ScoredPath(job.OutDir, Student)) && CandidateJsonl.ReadAll(Asc.ScoredPath(job.OutDir, Student)).Count == voted.Count * opt.Samples;
                var sampled = skip ? null : Evaluation.Sample(job, voted, greedy: false);
                var candidates = CandidateJsonl.ReadAll(sampled?.Path ?? Asc.ScoredPath(job.OutDir, Student));
                foreach (var m in curves.Keys) curves[m].Add(TestbedReport.VoteCurve(m, Task, voted, candidates, opt.Samples));
                if (sampled != null) logs.AddRange(sampled.Log.Select(l => $"seed {seed}: {l}"));
                return skip;
            });
            logs.AddRange(ctx.Log.Select(l => $"seed {seed}: {l}"));
        }

        // 4. the tables
        var scores = Models.Select(m => new ModelScores(m.Stage, m.Label, correct[m.Stage])).ToList();
        var accuracy = TestbedReport.Accuracy(scores, level, Reference);
        var inter = Enumerable.Range(0, seeds.Length).Select(i => TestbedReport.Intersect(correct["neg"][i], correct["kd"][i])).ToList();
        var ablations = Ablations.Select(a => (a.Ablation, a.Full, Stats.Paired(TestbedReport.ByProblem(correct[a.Ablation]), TestbedReport.ByProblem(correct[a.Full])))).ToList();
        var voteCurves = curves.ToDictionary(kv => kv.Key, kv => (IReadOnlyList<double[]>)kv.Value);
        wall.Stop();
        string md = Markdown(opt, seeds, world, premiseTable, accuracy, ablations, inter, ranker, voteCurves, logs, times, wall.Elapsed, cfg, tok);
        report.Line("");
        report.Line(md);
        File.WriteAllText(Path.Combine(opt.Out, "results.md"), md);
        var results = new TestbedResults(DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", Inv), Command(), Machine(), Isa(), wall.Elapsed.TotalSeconds, opt.Seed, seeds,
            test.Count, world.Train.Count, premise, accuracy, inter, ranker, voteCurves.ToDictionary(kv => Evaluator.Name(kv.Key), kv => Enumerable.Range(0, opt.Samples).Select(i => kv.Value.Average(s => s[i])).ToArray()), times);
        File.WriteAllText(Path.Combine(opt.Out, "results.json"), JsonSerializer.Serialize(results, MethodJson.Default.TestbedResults));
        WritePlots(opt.Out, seeds, voteCurves);
        report.Line($"done in {(int)wall.Elapsed.TotalMinutes:00}:{wall.Elapsed.Seconds:00}; tables in {Path.Combine(opt.Out, "results.md")}, every number in results.json");
        return ExitCodes.Ok;
    }

    /// <summary>The file in the output folder that records which settings made the run in it.</summary>
    public const string StampFile = "demo.json";

    /// <summary>Bumped when the world, the tokenizer or what a part writes changes, so that a folder made by
    /// another version of the testbed is not resumed as if it were this one's.</summary>
    public const int Format = 3;

    /// <summary>The settings a run's files depend on, as text: every resolved setting but the output folder and
    /// the number of seeds (each seed's parts live in their own folder), and the testbed's format.</summary>
    public static SortedDictionary<string, string> Stamp(TestbedSettings resolved)
    {
        var d = new SortedDictionary<string, string>(StringComparer.Ordinal) { ["format"] = Format.ToString(Inv) };
        foreach (var p in typeof(TestbedSettings).GetProperties())
            if (p.CanWrite && p.Name is not (nameof(TestbedSettings.Out) or nameof(TestbedSettings.Seeds)))
                d[p.Name] = Convert.ToString(p.GetValue(resolved), Inv) ?? "";
        return d;
    }

    /// <summary>Resumes only a run of the same settings: an output folder that holds another run's files (other
    /// settings, or no stamp at all) is refused before any work, naming what differs; nothing is deleted.
    /// An empty or new folder gets the stamp.</summary>
    public static void RequireSameRun(TestbedSettings resolved)
    {
        var want = Stamp(resolved);
        string path = Path.Combine(resolved.Out, StampFile);
        string advice = "choose another --out or remove the folder";
        if (File.Exists(path))
        {
            SortedDictionary<string, string>? have;
            try { have = JsonSerializer.Deserialize(File.ReadAllText(path), MethodJson.Default.SortedDictionaryStringString); }
            catch (JsonException e) { throw new SettingsException(null, [$"--out: {path} is not a demo stamp ({e.Message}); {advice}"]); }
            have ??= [];
            var diff = want.Keys.Union(have.Keys).Where(k => want.GetValueOrDefault(k) != have.GetValueOrDefault(k))
                .Select(k => $"{k} {have.GetValueOrDefault(k) ?? "(none)"} there, {want.GetValueOrDefault(k) ?? "(none)"} here").ToList();
            if (diff.Count > 0)
                throw new SettingsException(null, [$"--out: {Path.GetFullPath(resolved.Out)} holds a demo run with other settings ({string.Join("; ", diff)}); {advice}"]);
            return;
        }
        if (Directory.Exists(resolved.Out) && Directory.EnumerateFileSystemEntries(resolved.Out).Any())
            throw new SettingsException(null, [$"--out: {Path.GetFullPath(resolved.Out)} is not empty and has no {StampFile} (files of an earlier NegDistill version or of something else); {advice}"]);
        Directory.CreateDirectory(resolved.Out);
        Checkpoints.AtomicFile.WriteAllText(path, JsonSerializer.Serialize(want, MethodJson.Default.SortedDictionaryStringString));
    }

    /// <summary>Runs one part of the plan, timing it; <paramref name="body"/> returns whether it was skipped (complete on disk).</summary>
    static void Timed(List<PartTime> times, string part, RunProgress report, Func<bool> body)
    {
        report.Begin(part);
        report.Line($"== {part}  ({report.Status})");
        var sw = Stopwatch.StartNew();
        bool skipped = body();
        report.Done(part, skipped);
        times.Add(new PartTime(part, sw.Elapsed.TotalSeconds));
    }

    /// <summary>The base from scratch: cross-entropy on the rationales of gold solutions to the pretraining
    /// problems (every level), each seen once. The loss leaves the question out: the base is taught to answer.</summary>
    /// <summary>Pretrains a base from <paramref name="seed"/> (initial weights and batch order; the corpus is the
    /// world's) into ROOT/base, its checkpoints in ROOT/pretrain.</summary>
    static void Pretrain(TestbedSettings opt, ulong seed, TestbedWorld world, PhraseTokenizer tok, LlamaConfig cfg, IBackend ops, string root, IReporter report, CancellationToken cancel)
    {
        string baseDir = Path.Combine(root, "base");
        using var model = new LlamaModel(ops, cfg, DType.F32, trainBase: true, seed: seed);
        var batcher = new Batcher(tok, new BatchingOptions { CutoffLength = opt.Cutoff, BatchSize = opt.PretrainBatch, Seed = seed, LossMask = LossMaskMode.RationaleOnly });
        var pretrain = new TrainConfig
        {
            Steps = opt.PretrainSteps, MicroBatch = opt.PretrainBatch, EffectiveBatch = opt.PretrainBatch, LearningRate = opt.PretrainLr,
            WarmupSteps = Math.Max(1, opt.PretrainSteps / 10), CheckpointEvery = Math.Max(1, opt.PretrainSteps / 4), Seed = seed,
        };
        var tr = new Trainer(model, new CrossEntropyHead(), pretrain, Path.Combine(root, "pretrain"));
        Stage.Fit(report, "pretrain", tr, new BatchSource(batcher, batcher.EncodeAll(world.Pretrain.Select(TestbedWorld.GoldPair))), cancel);
        ModelIO.SaveBase(model, baseDir);
        tok.Save(baseDir);
    }

    static bool GreedyDone(string path, IReadOnlyList<TestQuestion> test) =>
        File.Exists(path) && CandidateJsonl.ReadAll(path).Select(c => c.QuestionId).ToHashSet().SetEquals(test.Select(q => q.Id));

    /// <summary>Greedy answers of the model <paramref name="load"/> builds to every test question, judged by the
    /// MATH checker; saved as candidates (index 0) in <paramref name="path"/> and read back when complete.</summary>
    static bool[] Greedy(Func<LlamaModel> load, ITokenizer tok, IReadOnlyList<TestQuestion> test, int maxNew, string path)
    {
        List<Candidate> cands;
        if (GreedyDone(path, test)) cands = CandidateJsonl.ReadAll(path);
        else
        {
            using (var m = load())
            {
                var prompts = test.Select(q => tok.Encode(q.Prompt, true, false)).ToList();
                cands = Asc.GreedyCandidates(m, tok, Task, test, maxNew, CacheShape.For(Math.Min(256, test.Count), CacheShape.Positions(m.Config, prompts, maxNew)));
            }
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            string tmp = path + ".tmp";
            using (var w = CandidateJsonlWriter.Open(tmp))
                foreach (var c in cands) w.Append(c);
            File.Move(tmp, path, overwrite: true);
        }
        var byId = cands.ToDictionary(c => c.QuestionId);
        return test.Select(q => TaskAnswers.IsCorrect(Task, byId[q.Id].Answer, q.ReferenceAnswer)).ToArray();
    }

    // ---------------------------------------------------------------- the report

    public static string Isa() =>
        (Vector512.IsHardwareAccelerated ? "AVX-512" : Vector256.IsHardwareAccelerated ? "AVX2 (AVX-512 off)" : "no 256-bit SIMD")
        + (Environment.GetEnvironmentVariable("DOTNET_EnableAVX512") is { } v ? $", DOTNET_EnableAVX512={v}" : "");

    public static string Machine()
    {
        string cpu = "unknown CPU";
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        return $"{cpu}, {Environment.ProcessorCount} cores";
    }

    static string Command() => "negdistill " + string.Join(" ", Environment.GetCommandLineArgs().Skip(1));

    static string Markdown(TestbedSettings opt, ulong[] seeds, TestbedWorld world, string premiseTable, List<MethodAccuracy> accuracy,
        List<(string A, string B, PairedComparison C)> ablations, List<Intersection> inter,
        RankResult ranker, IReadOnlyDictionary<VoteMethod, IReadOnlyList<double[]>> curves, List<string> logs, List<PartTime> times, TimeSpan wall, LlamaConfig cfg, PhraseTokenizer tok)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# NegDistill demo{(opt.Quick ? " (quick)" : "")}");
        sb.AppendLine();
        sb.AppendLine($"`{Command()}` — {DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", Inv)}, {Machine()}, {Isa()}; wall time {(int)wall.TotalMinutes} min {wall.Seconds} s; world seed {opt.Seed}, run seeds {string.Join(", ", seeds)}.");
        sb.AppendLine();
        sb.AppendLine($"World: {world.Train.Count} training problems × 8 teacher rationales, {world.Test.Count} test problems ({world.Test.Count / ArithmeticWorld.MaxLevel} per level 1–5), "
            + $"{(opt.SharedBase ? "one base" : "a base per seed")} pretrained on gold solutions of {world.Pretrain.Count} other problems of levels 1–{opt.PretrainMaxLevel} ({opt.PretrainSteps} steps of {opt.PretrainBatch}); student {cfg.ParameterCount:N0} parameters "
            + $"(dim {cfg.Dim}, {cfg.Layers} layers, vocabulary {cfg.Vocab}: bytes + {tok.Phrases.Count} phrases); every stage {opt.StageSteps} steps of {opt.MicroBatch} sequences, LoRA r 8 on q_proj/v_proj, lr {opt.StageLr.ToString(Inv)}.");
        sb.AppendLine();
        sb.AppendLine("## The teacher's data (the premise)");
        sb.AppendLine();
        sb.AppendLine(premiseTable);
        sb.AppendLine($"## Greedy accuracy on {world.Test.Count} test problems");
        sb.AppendLine();
        sb.AppendLine(TestbedReport.AccuracyTable(accuracy, "CoT KD", seeds.Length, world.Test.Count));
        sb.AppendLine("Δ and McNemar's exact test pair each method with CoT KD on the same (problem, seed); the bootstrap resamples problems (all seeds of a problem together). L1–L5: pooled accuracy % per level (number of steps). "
            + (opt.SharedBase ? "The base is one model (pretrained once, --shared-base), so its sd is 0 and the other rows' sd leaves out base-to-base variation." : "Each seed pretrains its own base, so the sd covers pretraining as well as the stages.") + "");
        sb.AppendLine();
        sb.AppendLine("## The ablations against the method they take a part from (paired, same problems and seeds)");
        sb.AppendLine();
        sb.AppendLine(TestbedReport.PairTable(ablations.Select(a => (Label(a.A), Label(a.B), a.C)).ToList()));
        sb.AppendLine("## Intersection: what the negative-only model solves that the positive-only model misses (paper, Fig. 1)");
        sb.AppendLine();
        sb.AppendLine(TestbedReport.IntersectionTable(inter, "LoRA_neg (D_neg only)", "CoT KD (D_pos only)"));
        sb.AppendLine("## Ranking model (held-out rationales)");
        sb.AppendLine();
        sb.AppendLine($"AUC {ranker.Auc:F3} (95 % bootstrap {ranker.AucLo:F3}–{ranker.AucHi:F3}), accuracy {100 * ranker.Accuracy:F1} % at threshold 0.5, on {ranker.Rationales} teacher rationales "
            + $"({ranker.Positives} positive) of {world.Rank.Count} problems outside the training data; trained once on the base ({opt.RankSteps} steps of {opt.MicroBatch}: question-matched positive/negative pairs, LoRA r 8 on q_proj/v_proj, head on the mean-pooled state and the mean and min token log-likelihood of the rationale).");
        sb.AppendLine();
        sb.AppendLine($"## SC / WS / ASC over the same {opt.Samples} candidates per test problem (NCE student, T = 0.7, the first {Math.Min(opt.VoteProblems, world.Test.Count)} test problems)");
        sb.AppendLine();
        sb.AppendLine(TestbedReport.VoteTable(curves, "NCE student"));
        sb.AppendLine("## Log");
        sb.AppendLine();
        foreach (var l in logs) sb.AppendLine($"- {l}");
        sb.AppendLine();
        sb.AppendLine("## Time per part (s)");
        sb.AppendLine();
        sb.AppendLine(string.Join(", ", times.Select(t => $"{t.Part} {t.Seconds:F0}")));
        return sb.ToString();
    }

    static string Label(string stage) => Models.First(m => m.Stage == stage).Label;

    static void WritePlots(string outDir, ulong[] seeds, IReadOnlyDictionary<VoteMethod, IReadOnlyList<double[]>> curves)
    {
        var series = curves.Select(kv => new PlotSeries(Evaluator.Name(kv.Key), Enumerable.Range(1, kv.Value[0].Length).Select(n => (double)n).ToList(),
            Enumerable.Range(0, kv.Value[0].Length).Select(i => 100 * kv.Value.Average(s => s[i])).ToList())).ToArray();
        LinePlot.Save(Path.Combine(outDir, "votes_vs_n.png"), $"NCE student: SC / WS / ASC against N (mean of {seeds.Length} seeds)", "N", "accuracy %", series);
        var loss = new List<PlotSeries>();
        foreach (var stage in new[] { "neg", "nat", "nce", "kd", "mix", "rank" })
        {
            string file = Path.Combine(outDir, $"seed-{seeds[0]}", stage, Trainer.MetricsFile);
            if (!File.Exists(file)) continue;
            var h = Trainer.ReadMetrics(file);
            loss.Add(new PlotSeries(stage, h.Select(m => (double)m.Step).ToList(), h.Select(m => m.Loss).ToList()));
        }
        if (loss.Count > 0) LinePlot.Save(Path.Combine(outDir, "loss_curves.png"), $"training loss (seed {seeds[0]})", "step", "loss", loss.ToArray());
    }
}
