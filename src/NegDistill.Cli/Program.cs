using System.CommandLine;
using NegDistill.Data;

namespace NegDistill.Cli;

/// <summary>Process exit codes, distinct per failure class.</summary>
static class ExitCodes
{
    public const int Ok = 0, Failure = 1, BadInput = 2, OutOfMemory = 3, Interrupted = 130;
}

static class Program
{
    static int Main(string[] args) => Run(args);

    /// <summary>The whole command line, as a function (tests call verbs through it).</summary>
    internal static int Run(string[] args)
    {
        var root = new RootCommand("NegDistill: distil reasoning from a teacher's right and wrong rationales into a small LLaMA (Li et al., AAAI 2024).");

        var demo = new Command("demo", "Run the embedded default end to end on this machine: generated problems, a noisy teacher, the split, a tiny LLaMA from scratch, LoRA students, greedy accuracy.");
        var outOpt = new Option<string>("--out") { Description = "output folder", DefaultValueFactory = _ => "runs/demo" };
        var devOpt = new Option<string>("--device") { Description = Backends.Help, DefaultValueFactory = _ => "cpu" };
        var seedOpt = new Option<ulong>("--seed") { Description = "seed of the world, the initialisation and the data order", DefaultValueFactory = _ => 1UL };
        var quickOpt = new Option<bool>("--quick") { Description = "a shortened run (seconds) that exercises every step; for CI" };
        demo.Options.Add(outOpt); demo.Options.Add(devOpt); demo.Options.Add(seedOpt); demo.Options.Add(quickOpt);
        demo.SetAction(r => Guarded(ct => Demo.Run(new DemoOptions
        {
            Out = r.GetValue(outOpt)!, Device = r.GetValue(devOpt)!, Seed = r.GetValue(seedOpt), Quick = r.GetValue(quickOpt),
        }, ct)));
        root.Subcommands.Add(demo);

        var data = new Command("data", "Data tools.");
        var splitCmd = new Command("split", "Split teacher rationales into D_pos / D_neg with the MATH checker and print the summary table.");
        var pathArg = new Argument<string>("path") { Description = "a teacher JSONL file, a folder tree of them, or a glob" };
        var strictOpt = new Option<bool>("--strict") { Description = "stop at the first malformed line instead of skipping and counting it" };
        splitCmd.Arguments.Add(pathArg); splitCmd.Options.Add(strictOpt);
        splitCmd.SetAction(r => Guarded(_ =>
        {
            Console.WriteLine(SplitReport.RenderPath(r.GetValue(pathArg)!, policy: r.GetValue(strictOpt) ? MalformedPolicy.Stop : MalformedPolicy.Skip));
            return ExitCodes.Ok;
        }));
        data.Subcommands.Add(splitCmd);
        root.Subcommands.Add(data);

        var bench = new Command("bench", "Measure the engine on this machine.");
        var benchTrain = new Command("train", "Time one LoRA training step (forward, backward, AdamW) op by op, against this backend's 1024³ matmul measured in the same run.");
        var presetOpt = new Option<string>("--preset") { Description = "model shape: tiny, small, llama-7b", DefaultValueFactory = _ => "small" };
        var bOpt = new Option<int>("--batch") { Description = "sequences per step", DefaultValueFactory = _ => 4 };
        var tOpt = new Option<int>("--seq") { Description = "tokens per sequence", DefaultValueFactory = _ => 256 };
        var stepsOpt = new Option<int>("--steps") { Description = "timed steps (after one warm-up step)", DefaultValueFactory = _ => 3 };
        var mdOpt = new Option<string?>("--markdown") { Description = "also append the tables to this Markdown file" };
        var benchDev = new Option<string>("--device") { Description = Backends.Help, DefaultValueFactory = _ => "cpu" };
        foreach (var o in new Option[] { presetOpt, bOpt, tOpt, stepsOpt, mdOpt, benchDev }) benchTrain.Options.Add(o);
        benchTrain.SetAction(r => Guarded(_ =>
        {
            string? md = r.GetValue(mdOpt);
            using var w = md == null ? null : new StreamWriter(md, append: true);
            return Bench.Train(r.GetValue(presetOpt)!, r.GetValue(benchDev)!, r.GetValue(bOpt), r.GetValue(tOpt), r.GetValue(stepsOpt), w);
        }));
        bench.Subcommands.Add(benchTrain);
        root.Subcommands.Add(bench);

        var plan = new Command("plan", "Print the memory plan of a training run (LoRA, NAT or NCE stage) or of sampling, before anything is allocated; exit 3 when it does not fit.");
        var planPreset = new Option<string>("--preset") { Description = "model shape: tiny, small, llama-7b", DefaultValueFactory = _ => "llama-7b" };
        var planStage = new Option<string>("--stage") { Description = "lora (neg, kd, mix, ul, nt, cl, rank), nat, nce, or sample", DefaultValueFactory = _ => "lora" };
        var planB = new Option<int>("--batch") { Description = "training micro-batch (sequences)", DefaultValueFactory = _ => 16 };
        var planT = new Option<int>("--seq") { Description = "training tokens per sequence; sampling positions per sequence (prompt + new tokens)", DefaultValueFactory = _ => 256 };
        var planW = new Option<string>("--weights") { Description = "frozen weight storage: bf16, f16, f32", DefaultValueFactory = _ => "bf16" };
        var planRe = new Option<bool>("--recompute") { Description = "keep one layer's activations and recompute the rest in backward" };
        var planQ = new Option<int>("--questions") { Description = "sample: questions", DefaultValueFactory = _ => 32 };
        var planN = new Option<int>("--n") { Description = "sample: candidates per question", DefaultValueFactory = _ => 16 };
        var planSlots = new Option<int>("--slots") { Description = "sample: KV-cache slots (0: the most that fit, up to questions × n)" };
        var planGb = new Option<double>("--device-gb") { Description = "device memory to check the plan against (GB)", DefaultValueFactory = _ => 80 };
        foreach (var o in new Option[] { planPreset, planStage, planB, planT, planW, planRe, planQ, planN, planSlots, planGb }) plan.Options.Add(o);
        plan.SetAction(r => Guarded(_ =>
        {
            var dt = r.GetValue(planW)!.ToLowerInvariant() switch
            {
                "bf16" => Runtime.DType.BF16, "f16" => Runtime.DType.F16, "f32" => Runtime.DType.F32,
                var w => throw new ArgumentException($"--weights: '{w}' is not bf16, f16 or f32"),
            };
            string preset = r.GetValue(planPreset)!, stage = r.GetValue(planStage)!.ToLowerInvariant();
            var cfg = Model.LlamaConfig.Preset(preset);
            var lora = new Model.LoraConfig();
            int b = r.GetValue(planB), t = r.GetValue(planT);
            long device = (long)(r.GetValue(planGb) * 1e9);
            if (stage == "sample")
            {
                int seqs = r.GetValue(planQ) * r.GetValue(planN);
                int slots = r.GetValue(planSlots) > 0 ? r.GetValue(planSlots)
                    : Planning.FitSlots(cfg, dt, lora, seqs, t, Pipeline.CacheShape.PrefillRows, device);
                var shape = Pipeline.CacheShape.For(slots, t);
                var sp = Model.MemoryPlan.ForSampling(cfg, dt, lora, shape.Slots, shape.MaxSeq, shape.Rows);
                Console.Write(sp.Render($"sampling {r.GetValue(planQ)} questions × {r.GetValue(planN)} candidates, {preset}, {dt} weights, LoRA {string.Join("/", lora.Targets)} r {lora.Rank}, {slots} slots × {t} positions, {shape.Rows} rows per forward", device));
                return sp.Total > device ? ExitCodes.OutOfMemory : ExitCodes.Ok;
            }
            var kind = stage switch
            {
                "lora" => Model.TrainingStage.Lora, "nat" => Model.TrainingStage.Nat, "nce" => Model.TrainingStage.Nce,
                _ => throw new ArgumentException($"--stage: '{stage}' is not lora, nat, nce or sample"),
            };
            var p = Model.MemoryPlan.ForTraining(cfg, dt, lora, b, t, r.GetValue(planRe), stage: kind, nat: new Model.MemoryPlan.NatPlan(lora, lora));
            Console.Write(p.Render($"{kind} training, {preset}, {dt} weights, LoRA {string.Join("/", lora.Targets)} r {lora.Rank}, micro-batch {b} × {t}", device));
            if (p.Total > device)
            {
                Console.Error.WriteLine("does not fit: lower --batch or --seq, or add --recompute");
                return ExitCodes.OutOfMemory;
            }
            return ExitCodes.Ok;
        }));
        root.Subcommands.Add(plan);

        // sample / eval share their options; vote reads what sample wrote
        var eBase = new Option<string>("--base") { Description = "Hugging Face LLaMA checkpoint folder (config.json, *.safetensors, tokenizer)", Required = true };
        var eAdapter = new Option<string?>("--adapter") { Description = "PEFT LoRA folder to apply" };
        var eRank = new Option<string?>("--rank") { Description = "ranking model folder (PEFT LoRA + score_head.safetensors): scores every candidate for ASC" };
        var eData = new Option<string>("--data") { Description = "MATH (JSON per problem or JSONL) or GSM8K JSONL: file, folder or glob", Required = true };
        var eTask = new Option<string>("--task") { Description = "math or gsm8k", DefaultValueFactory = _ => "math" };
        var eN = new Option<int>("--n") { Description = "candidates per question (votes at 1, 2, 4, 8, 16 up to this)", DefaultValueFactory = _ => 16 };
        var eMax = new Option<int>("--max-new") { Description = "token budget per candidate", DefaultValueFactory = _ => 256 };
        var eTemp = new Option<float>("--temperature") { Description = "sampling temperature", DefaultValueFactory = _ => Pipeline.Asc.DefaultTemperature };
        var eLimit = new Option<int>("--limit") { Description = "only the first K questions (0: all)" };
        var eOut = new Option<string>("--out") { Description = "output folder", DefaultValueFactory = _ => "runs/eval" };
        var eDev = new Option<string>("--device") { Description = Backends.Help, DefaultValueFactory = _ => "cpu" };
        var eSeed = new Option<ulong>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 1UL };
        var eSlots = new Option<int>("--slots") { Description = "KV-cache slots, i.e. sequences decoded at once (0: the most that fit the device, up to 256)" };
        var eMem = new Option<double>("--memory-limit") { Description = "plan against this many GB instead of the device's memory (0: the device's)" };
        EvalOptions EvalOpts(ParseResult r) => new()
        {
            Base = r.GetValue(eBase)!, Adapter = r.GetValue(eAdapter), Rank = r.GetValue(eRank), Data = r.GetValue(eData)!, Task = r.GetValue(eTask)!,
            N = r.GetValue(eN), MaxNew = r.GetValue(eMax), Temperature = r.GetValue(eTemp), Limit = r.GetValue(eLimit), Out = r.GetValue(eOut)!,
            Device = r.GetValue(eDev)!, Seed = r.GetValue(eSeed), Slots = r.GetValue(eSlots), MemoryLimitGb = r.GetValue(eMem),
        };

        var sample = new Command("sample", "Sample N candidates per question (KV cache, continuous batching) into OUT/LABEL.candidates.jsonl, resuming a partial file; with --rank also OUT/LABEL.candidates.scored.jsonl. Prints the memory plan first.");
        foreach (var o in new Option[] { eBase, eAdapter, eRank, eData, eTask, eN, eMax, eTemp, eLimit, eOut, eDev, eSeed, eSlots, eMem }) sample.Options.Add(o);
        sample.SetAction(r => Guarded(_ => Eval.Sample(EvalOpts(r))));
        root.Subcommands.Add(sample);

        var vote = new Command("vote", "SC, WS or ASC accuracy at N = 1, 2, 4, … from saved candidates (answers re-judged against --data's references).");
        var vMethod = new Argument<string>("method") { Description = "sc | ws | asc (asc needs a *.candidates.scored.jsonl)" };
        var vCand = new Option<string>("--candidates") { Description = "candidates JSONL written by `sample` or `eval`", Required = true };
        var vData = new Option<string>("--data") { Description = "the test data the candidates answer (for the reference answers)", Required = true };
        var vN = new Option<int>("--n") { Description = "largest N", DefaultValueFactory = _ => 16 };
        vote.Arguments.Add(vMethod);
        foreach (var o in new Option[] { vCand, vData, eTask, vN, eLimit }) vote.Options.Add(o);
        vote.SetAction(r => Guarded(_ => Eval.Vote(r.GetValue(vMethod)!, r.GetValue(vCand)!, new EvalOptions
        {
            Base = "", Data = r.GetValue(vData)!, Task = r.GetValue(eTask)!, N = r.GetValue(vN), Limit = r.GetValue(eLimit),
        })));
        root.Subcommands.Add(vote);

        var eval = new Command("eval", "Greedy and SC / WS / ASC accuracy of a model (+ LoRA adapter) on MATH (per subject) or GSM8K: sample, score with --rank, vote; tables and a plot under --out.");
        foreach (var o in new Option[] { eBase, eAdapter, eRank, eData, eTask, eN, eMax, eTemp, eLimit, eOut, eDev, eSeed, eSlots, eMem }) eval.Options.Add(o);
        eval.SetAction(r => Guarded(_ => Eval.Run(EvalOpts(r))));
        root.Subcommands.Add(eval);

        var train = new Command("train", "Train one stage or baseline: neg, nat, nce (with self-augmentation), kd, mix, ul, nt, cl, rank. Stages share --out (nat needs neg; nce needs neg and nat).");
        var tStage = new Argument<string>("stage") { Description = string.Join(" | ", TrainVerb.StagesList) };
        var tBase = new Option<string>("--base") { Description = "Hugging Face LLaMA checkpoint folder (config.json, *.safetensors, tokenizer)", Required = true };
        var tData = new Option<string>("--data") { Description = "teacher rationales in the authors' JSONL: file, folder tree or glob", Required = true };
        var tOut = new Option<string>("--out") { Description = "output folder shared by the stages", DefaultValueFactory = _ => "runs/train" };
        var tDev = new Option<string>("--device") { Description = Backends.Help, DefaultValueFactory = _ => "cpu" };
        var tSteps = new Option<int>("--steps") { Description = "optimiser steps", DefaultValueFactory = _ => 1000 };
        var tMicro = new Option<int>("--micro-batch") { Description = "sequences per forward/backward", DefaultValueFactory = _ => 4 };
        var tEff = new Option<int>("--effective-batch") { Description = "sequences per optimiser step (gradient accumulation)", DefaultValueFactory = _ => 128 };
        var tLr = new Option<float>("--lr") { Description = "AdamW learning rate", DefaultValueFactory = _ => 3e-4f };
        var tWarm = new Option<int>("--warmup") { Description = "linear warm-up steps before cosine decay", DefaultValueFactory = _ => 20 };
        var tCut = new Option<int>("--cutoff") { Description = "tokens per training sequence", DefaultValueFactory = _ => 256 };
        var tCk = new Option<int>("--checkpoint-every") { Description = "optimiser steps between checkpoints", DefaultValueFactory = _ => 50 };
        var tR = new Option<int>("--lora-r") { Description = "LoRA rank", DefaultValueFactory = _ => 8 };
        var tA = new Option<float>("--lora-alpha") { Description = "LoRA alpha (scale alpha/r)", DefaultValueFactory = _ => 16f };
        var tD = new Option<float>("--lora-dropout") { Description = "LoRA dropout", DefaultValueFactory = _ => 0.05f };
        var tT = new Option<string>("--targets") { Description = "comma-separated projections", DefaultValueFactory = _ => "q_proj,v_proj" };
        var tAug = new Option<int>("--augment-questions") { Description = "nce: training questions the NAT model answers for self-augmentation", DefaultValueFactory = _ => int.MaxValue };
        var tMax = new Option<int>("--max-new") { Description = "nce: token budget of a self-augmentation answer", DefaultValueFactory = _ => 256 };
        var tSeed = new Option<ulong>("--seed") { Description = "seed of initialisation, data order and dropout", DefaultValueFactory = _ => 1UL };
        var tRe = new Option<bool>("--recompute") { Description = "keep one layer's activations and recompute the others in backward (less memory, one more forward)" };
        var tMem = new Option<double>("--memory-limit") { Description = "plan against this many GB instead of the device's memory (0: the device's)" };
        train.Arguments.Add(tStage);
        foreach (var o in new Option[] { tBase, tData, tOut, tDev, tSteps, tMicro, tEff, tLr, tWarm, tCut, tCk, tR, tA, tD, tT, tAug, tMax, tSeed, tRe, tMem }) train.Options.Add(o);
        train.SetAction(r => Guarded(ct => TrainVerb.Run(new TrainOptions
        {
            Stage = r.GetValue(tStage)!, Base = r.GetValue(tBase)!, Data = r.GetValue(tData)!, Out = r.GetValue(tOut)!, Device = r.GetValue(tDev)!,
            Steps = r.GetValue(tSteps), MicroBatch = r.GetValue(tMicro), EffectiveBatch = r.GetValue(tEff), Lr = r.GetValue(tLr), Warmup = r.GetValue(tWarm),
            Cutoff = r.GetValue(tCut), CheckpointEvery = r.GetValue(tCk), Rank = r.GetValue(tR), Alpha = r.GetValue(tA), Dropout = r.GetValue(tD),
            Targets = r.GetValue(tT)!, AugmentQuestions = r.GetValue(tAug), MaxNew = r.GetValue(tMax), Seed = r.GetValue(tSeed),
            MemoryLimitGb = r.GetValue(tMem), Recompute = r.GetValue(tRe),
        }, ct)));
        root.Subcommands.Add(train);

        var pipe = new Command("pipeline", "Run every stage in order from one JSON config (validated first; completed stages are skipped, so a rerun resumes), then the evaluation.");
        var pipeArg = new Argument<string>("config") { Description = "pipeline config file (JSON; fields in the README)" };
        pipe.Arguments.Add(pipeArg);
        pipe.SetAction(r => Guarded(ct => PipelineVerb.Run(r.GetValue(pipeArg)!, ct)));
        root.Subcommands.Add(pipe);

        root.Subcommands.Add(Gpu.PtxVerb.Build());
        root.Subcommands.Add(Gpu.GpuCheck.Build());
        root.Subcommands.Add(Gpu.InteropVerb.Build());

        return root.Parse(args).Invoke();
    }

    /// <summary>Runs a verb with Ctrl-C turned into cancellation (the trainer checkpoints and stops) and
    /// errors mapped to exit codes with a one-line message.</summary>
    internal static int Guarded(Func<CancellationToken, int> body)
    {
        using var cts = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); Console.Error.WriteLine("\ninterrupt: finishing the current step and checkpointing..."); };
        Console.CancelKeyPress += onCancel;
        try { return body(cts.Token); }
        catch (OutOfMemoryException e) { Console.Error.WriteLine($"out of memory: {e.Message}"); return ExitCodes.OutOfMemory; }
        catch (PlanDoesNotFitException e) { Console.Error.WriteLine($"does not fit: {e.Message}"); return ExitCodes.OutOfMemory; }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidDataException or FileNotFoundException or DirectoryNotFoundException
                                   or MalformedRecordException or Checkpoints.CheckpointFormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return ExitCodes.BadInput;
        }
        finally { Console.CancelKeyPress -= onCancel; }
    }
}
