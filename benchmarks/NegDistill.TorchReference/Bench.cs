// bench: NegDistill (fp32 CpuBackend) and TorchSharp (fp32 libtorch) timed side by side in one process.
//
//   bench [--cases gemm,lora,nce,decode] [--repeats 7] [--warmup 2] [--pause-ms 50] [--markdown FILE]
//         [--batch 4] [--seq 256] [--lora-dropout 0.05] [--nce-rows 2048] [--decode-batch 16]
//         [--prompt 16] [--new-tokens 32] [--torch-threads CORES] [--nce-torch-memory keep|default]
//
// Every case builds its inputs once, copies them (weights included) from the engine to torch, checks that
// both sides compute the same thing, warms both up, then times `repeats` calls of each, alternating the
// sides call by call (the order flips every repeat) so that load from other processes falls on both. The
// table gives the median (and best) speed of each side and the ratio NegDistill speed / TorchSharp speed
// from the medians (> 1: NegDistill faster). Cases:
//   gemm    1024³ fp32 C = A·B and C = A·Bᵀ: CpuBackend.MatMul vs torch.matmul (10 products per call)
//   lora    LoRA training step of the small preset (r 8, alpha 16, q_proj/v_proj, LoRA dropout), batch×seq
//           tokens: forward, CE, backward, AdamW on the LoRA factors. TorchSharp: frozen base, LoRA
//           Parameters, autograd, torch.optim.AdamW; once with SDPA attention (BenchTorchModels.SdpaLlama)
//           and once with the parity model's explicit masked softmax (TorchLlama.Forward)
//   nce     NCE loss + dL/dz_s at V = 32,000 over nce-rows rows (sequences of 256, right-padded as in the
//           engine's NceLossBenchmarks): NceKl + β + NceDistillFused vs op-by-op TorchSharp with autograd
//           (LeanNce, and the parity transcription TorchNce.Loss)
//   decode  greedy KV-cache decode of the small preset, decode-batch prompts of `prompt` tokens, new-tokens
//           each: the engine's Sampler vs a TorchSharp KV-cache loop (SdpaDecoder, and TorchLlama's own
//           Prefill/DecodeStep), inference mode / no_grad
// Bars (issue 14): GEMM ≥ 1.5 with AVX-512, ≥ 1.0 and ≥ 75 % of the FMA peak on 256-bit vectors; LoRA step ≥ 1;
// decode ≥ 1.2 (NCE ≥ 2, issue 7). The machine's fp32 FMA peak (CpuInfo.MeasurePeak: cores from sysfs topology,
// clock from a timed chain of dependent adds, lanes from the active vector ISA, FMA pipes measured) is printed
// first, and each GEMM's share of it. Run with DOTNET_EnableAVX512=0 to time the engine's AVX2 path on an
// AVX-512 machine; libtorch's own ISA is set by MKL_ENABLE_INSTRUCTIONS / ATEN_CPU_CAPABILITY (printed).
// Settings: torch.set_num_threads(cores) (--torch-threads to change it); the engine splits its ops over the
// same cores with Parallel.For. Op-by-op torch allocates a fresh tensor per op; on this VM first-touch page
// faults make a fresh 262 MB tensor cost ~440 ms, so for the NCE case (and only there) the bench has glibc
// keep libtorch's freed blocks for reuse (--nce-torch-memory keep, the default; see TorchKeepsMemory).
using System.Diagnostics;
using System.Globalization;
using System.Text;
using NegDistill.Cpu;
using NegDistill.Infer;
using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using ETensor = NegDistill.Runtime.Tensor;
using TTensor = TorchSharp.torch.Tensor;

namespace NegDistill.TorchReference;

public static class Bench
{
    const string Usage = "usage: bench [--cases gemm,lora,nce,decode] [--repeats N] [--warmup N] [--pause-ms MS] [--markdown FILE]\n" +
                         "             [--batch 4] [--seq 256] [--lora-dropout 0.05] [--nce-rows 2048] [--decode-batch 16] [--prompt 16] [--new-tokens 32]\n" +
                         "             [--torch-threads CORES] [--nce-torch-memory keep|default]";

    sealed class Options
    {
        public HashSet<string> Cases = ["gemm", "lora", "nce", "decode"];
        public int Repeats = 7, Warmup = 2, PauseMs = 50;
        public int Batch = 4, Seq = 256, NceRows = 2048, DecodeBatch = 16, Prompt = 16, NewTokens = 32;
        public float LoraDropout = 0.05f;
        public string? Markdown;
        public int TorchThreads = Environment.ProcessorCount;
        public bool TorchKeepMemory = true;
    }

    /// <summary>One side of a comparison: what one timed call does, what must happen (untimed) before it.</summary>
    sealed class Side(string name, Action run, Action? prepare = null)
    {
        public string Name { get; } = name;
        public Action Run { get; } = run;
        public Action? Prepare { get; } = prepare;
        public List<double> Seconds { get; } = [];
        public double Median => Stats.Median(Seconds);
        public double Min => Seconds.Min();
    }

    enum Unit { GflopPerS, TokensPerS, MsPerCall }

    /// <summary>A table row. Work per call: FLOPs (GflopPerS), tokens (TokensPerS), unused (MsPerCall).</summary>
    sealed record Row(string Case, Unit Unit, double Work, Side Engine, Side Torch, string Bar, string Load, string Peak = "");

    /// <summary>The engine's ratio bar for the GEMM: 1.5 with AVX-512, 1.0 on narrower vectors (issue 14).</summary>
    static string GemmBar => System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "≥ 1.5" : "≥ 1";

    /// <summary>The least share of the FMA peak the engine's GEMM must reach on 256-bit vectors (issue 14); none is set for AVX-512.</summary>
    static double? GemmPeakBar => System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? null : 0.75;

    static FmaPeak? _peak;

    public static int Run(string[] args)
    {
        Options o;
        try { o = Parse(args); }
        catch (ArgumentException e) { Console.Error.WriteLine($"bench: {e.Message}\n{Usage}"); return 2; }
        if (o.Repeats < 1 || o.Warmup < 0) { Console.Error.WriteLine("bench: --repeats must be ≥ 1 and --warmup ≥ 0"); return 2; }

        int cores = Environment.ProcessorCount;
        torch.set_num_threads(o.TorchThreads);
        var total = Stopwatch.StartNew();
        Console.WriteLine($"bench: NegDistill CpuBackend fp32 vs TorchSharp {typeof(torch).Assembly.GetName().Version} (libtorch, fp32) in one process");
        Console.WriteLine($"  cores {cores}; torch threads {torch.get_num_threads()}; Vector512 {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}; " +
                          $"{o.Warmup} warm-up + {o.Repeats} timed calls per side, alternating; {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC; load {Load()}");
        Console.WriteLine($"  CPU {CpuInfo.ModelName}; engine ISA {CpuInfo.Isa}; GEMM {NegDistill.Cpu.Gemm.Blocking}");
        string Env(string name) => $"{name}={Environment.GetEnvironmentVariable(name) ?? "(unset)"}";
        Console.WriteLine($"  runtime switches: {Env("DOTNET_EnableAVX512")}, {Env("DOTNET_EnableAVX2")}; libtorch: {Env("MKL_ENABLE_INSTRUCTIONS")}, {Env("ATEN_CPU_CAPABILITY")}");
        _peak = CpuInfo.MeasurePeak();
        Console.WriteLine($"  {_peak}");
        var rows = new List<Row>();
        var notes = new List<string> { $"Machine: {CpuInfo.ModelName}, engine ISA {CpuInfo.Isa}; {_peak}." };
        try
        {
            if (o.Cases.Contains("gemm")) Gemm(o, rows);
            if (o.Cases.Contains("lora")) Lora(o, rows, notes);
            if (o.Cases.Contains("nce")) NceCase(o, rows);
            if (o.Cases.Contains("decode")) Decode(o, rows, notes);
        }
        catch (CheckFailed e)
        {
            Console.Error.WriteLine($"bench: CHECK FAILED: {e.Message}");
            return 1;
        }

        var md = Table(rows);
        Console.WriteLine();
        Console.WriteLine($"NegDistill vs TorchSharp, {cores} cores, medians of {o.Repeats} calls per side (best in brackets); ratio = NegDistill speed / TorchSharp speed from the medians; load = 1-min load average at the start and end of the case");
        Console.WriteLine();
        Console.Write(md);
        foreach (var n in notes) Console.WriteLine(n);
        Console.WriteLine($"\ntotal {total.Elapsed.TotalSeconds:F0} s; load {Load()}");
        if (o.Markdown != null) File.WriteAllText(o.Markdown, md + string.Join("\n", notes) + "\n");
        return 0;
    }

    static Options Parse(string[] args)
    {
        var o = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int Int() { var s = Next(); return int.TryParse(s, out int v) && v >= 0 ? v : throw new ArgumentException($"{args[i - 1]}: '{s}' is not a non-negative integer"); }
            switch (args[i])
            {
                case "--cases":
                    o.Cases = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();
                    foreach (var c in o.Cases) if (c is not ("gemm" or "lora" or "nce" or "decode")) throw new ArgumentException($"unknown case '{c}'");
                    break;
                case "--repeats": o.Repeats = Int(); break;
                case "--warmup": o.Warmup = Int(); break;
                case "--pause-ms": o.PauseMs = Int(); break;
                case "--batch": o.Batch = Int(); break;
                case "--seq": o.Seq = Int(); break;
                case "--nce-rows": o.NceRows = Int(); break;
                case "--decode-batch": o.DecodeBatch = Int(); break;
                case "--prompt": o.Prompt = Int(); break;
                case "--new-tokens": o.NewTokens = Int(); break;
                case "--lora-dropout":
                    var s = Next();
                    o.LoraDropout = float.TryParse(s, CultureInfo.InvariantCulture, out float p) && p >= 0 && p < 1 ? p : throw new ArgumentException($"--lora-dropout: '{s}' is not in [0, 1)");
                    break;
                case "--markdown": o.Markdown = Next(); break;
                case "--torch-threads": o.TorchThreads = Math.Max(1, Int()); break;
                case "--nce-torch-memory":
                    var mode = Next();
                    o.TorchKeepMemory = mode switch { "keep" => true, "default" => false, _ => throw new ArgumentException($"--nce-torch-memory: '{mode}' is not keep or default") };
                    break;
                default: throw new ArgumentException($"unknown option '{args[i]}'");
            }
        }
        if (o.NceRows % 256 != 0 || o.NceRows == 0) throw new ArgumentException("--nce-rows must be a positive multiple of 256 (sequences of 256)");
        if (o.Batch < 1 || o.Seq < 2 || o.DecodeBatch < 1 || o.Prompt < 1 || o.NewTokens < 1) throw new ArgumentException("sizes must be positive (--seq ≥ 2)");
        return o;
    }

    // ------------------------------------------------------------------ timing

    /// <summary>Warm-up calls of every side, then <paramref name="repeats"/> timed rounds, one call per side per
    /// round, the order reversed every other round, a short pause before each call (lets libgomp's spinning
    /// workers and the .NET pool settle).</summary>
    static void Measure(Options o, params Side[] sides)
    {
        foreach (var s in sides)
            for (int w = 0; w < o.Warmup; w++) { s.Prepare?.Invoke(); s.Run(); }
        for (int r = 0; r < o.Repeats; r++)
            foreach (var s in r % 2 == 0 ? sides : sides.Reverse())
            {
                s.Prepare?.Invoke();
                GC.Collect();
                if (o.PauseMs > 0) Thread.Sleep(o.PauseMs);
                long t0 = Stopwatch.GetTimestamp();
                s.Run();
                s.Seconds.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds);
            }
        foreach (var s in sides)
            Console.WriteLine($"    {s.Name,-44} ms per call: {string.Join(" ", s.Seconds.Select(x => (x * 1000).ToString("F1", CultureInfo.InvariantCulture)))}");
    }

    // glibc's mallopt parameters (malloc.h)
    const int M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4, DefaultMmapMax = 65536;

    [System.Runtime.InteropServices.DllImport("libc.so.6", EntryPoint = "mallopt")]
    static extern int Mallopt(int param, int value);

    /// <summary>libtorch takes its CPU tensors from glibc malloc, which serves every block of 32 MB or more
    /// with a fresh mmap and unmaps it on free. Op by op at 2,048 × 32,000 every temporary is 262 MB, and on
    /// this VM first-touch page faults cost ~1.7 ms per MB (a fresh 262 MB exp: ~440 ms; into a reused
    /// buffer: ~25 ms), which made a TorchSharp NCE call take 5–14 s. While <paramref name="keep"/>, glibc serves
    /// large blocks from its heap and never trims it (M_MMAP_MAX 0, M_TRIM_THRESHOLD −1), so freed
    /// temporaries are reused as a caching allocator would reuse them; off restores mmap for large blocks
    /// (trimming stays off). The engine's tensors are managed arrays allocated once and do not use malloc.
    /// (libtorch's own THP_MEM_ALLOC_ENABLE also removes most of the fault cost, ~42 ms per fresh 262 MB,
    /// but it is read once per process and slows its 1024³ matmul by a third here, so it is not used.)</summary>
    static string TorchKeepsMemory(bool keep)
    {
        try
        {
            bool ok = keep ? Mallopt(M_MMAP_MAX, 0) == 1 & Mallopt(M_TRIM_THRESHOLD, -1) == 1 : Mallopt(M_MMAP_MAX, DefaultMmapMax) == 1;
            return !ok ? "mallopt refused; glibc defaults"
                : keep ? "glibc keeps freed blocks for reuse (mallopt M_MMAP_MAX 0, M_TRIM_THRESHOLD −1)" : "glibc maps large blocks afresh again (M_MMAP_MAX default)";
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return $"mallopt unavailable ({e.GetType().Name}); glibc defaults";
        }
    }

    static string Load()
    {
        try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "?"; }
    }

    static string Load1() => Load().Split(' ')[0];

    sealed class CheckFailed(string message) : Exception(message);

    /// <summary>‖x − y‖ / ‖y‖ and max |x − y| / max |y|.</summary>
    static (double Norm, double Max) RelErr(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        if (x.Length != y.Length) throw new CheckFailed($"lengths differ: {x.Length} vs {y.Length}");
        double d2 = 0, y2 = 0, dm = 0, ym = 0;
        for (int i = 0; i < x.Length; i++)
        {
            double d = (double)x[i] - y[i];
            d2 += d * d; y2 += (double)y[i] * y[i];
            dm = Math.Max(dm, Math.Abs(d)); ym = Math.Max(ym, Math.Abs(y[i]));
        }
        return (Math.Sqrt(d2 / Math.Max(y2, 1e-300)), dm / Math.Max(ym, 1e-300));
    }

    static void Check(string what, ReadOnlySpan<float> engine, ReadOnlySpan<float> torchSide, double tol)
    {
        var (n, m) = RelErr(engine, torchSide);
        bool ok = n <= tol && !double.IsNaN(n);
        Console.WriteLine($"  check {what}: ‖Δ‖/‖torch‖ = {n:E2}, max|Δ|/max|torch| = {m:E2} (tolerance {tol:E0} on the norm) {(ok ? "ok" : "FAILED")}");
        if (!ok) throw new CheckFailed($"{what}: relative difference {n:E2} above {tol:E0}");
    }

    static void CheckScalar(string what, double engine, double torchSide, double tol)
    {
        double rel = Math.Abs(engine - torchSide) / Math.Max(Math.Abs(torchSide), 1e-30);
        bool ok = rel <= tol;
        Console.WriteLine($"  check {what}: NegDistill {engine:G8}, TorchSharp {torchSide:G8}, relative difference {rel:E2} (tolerance {tol:E0}) {(ok ? "ok" : "FAILED")}");
        if (!ok) throw new CheckFailed($"{what}: {engine} vs {torchSide}");
    }

    static float[] Host(TTensor t) => t.detach().contiguous().to(ScalarType.Float32).data<float>().ToArray();

    static float[] Host(IBackend ops, ETensor t) { var r = new float[t.Length]; ops.Download(t, r); return r; }

    // ------------------------------------------------------------------ 1. GEMM

    static void Gemm(Options o, List<Row> rows)
    {
        const int n = 1024, inner = 10;
        Console.WriteLine($"\n[gemm] {n}³ fp32, {inner} products per timed call; load {Load()}");
        using var ops = new CpuBackend();
        var rnd = new Random(1);
        float[] Rand() { var x = new float[n * n]; for (int i = 0; i < x.Length; i++) x[i] = rnd.NextSingle() * 2 - 1; return x; }
        float[] ha = Rand(), hb = Rand();
        using var a = ops.Alloc("a", DType.F32, n, n); using var b = ops.Alloc("b", DType.F32, n, n); using var c = ops.Alloc("c", DType.F32, n, n);
        ops.Upload(a, ha); ops.Upload(b, hb);
        using var ta = tensor(ha, [n, n]); using var tb = tensor(hb, [n, n]);
        foreach (bool transB in new[] { false, true })
        {
            string load0 = Load1();
            string label = transB ? "A·Bᵀ" : "A·B";
            ops.MatMul(c, a, b, n, n, n, false, transB);
            using (var r = transB ? ta.matmul(tb.t()) : ta.matmul(tb)) Check($"GEMM {label}", Host(ops, c), Host(r), 1e-5);
            var eng = new Side($"NegDistill CpuBackend.MatMul {label}", () => { for (int i = 0; i < inner; i++) ops.MatMul(c, a, b, n, n, n, false, transB); });
            var tor = new Side($"TorchSharp torch.matmul {label}", () =>
            {
                for (int i = 0; i < inner; i++) { using var r = transB ? ta.matmul(tb.t()) : ta.matmul(tb); }
            });
            Measure(o, eng, tor);
            double work = 2.0 * n * n * n * inner;
            rows.Add(new Row($"GEMM {n}³ fp32, C = {label}", Unit.GflopPerS, work, eng, tor, GemmBar, $"{load0} → {Load1()}", PeakShare(work, eng, tor)));
        }
    }

    /// <summary>"engine % / torch %" of the FMA peak from the medians, with the peak bar where one is set.</summary>
    static string PeakShare(double work, Side eng, Side tor)
    {
        if (_peak is null) return "";
        double pe = work / eng.Median / 1e9 / _peak.GflopPerS, pt = work / tor.Median / 1e9 / _peak.GflopPerS;
        string bar = GemmPeakBar is double b ? $" (≥ {b * 100:F0} %: {(pe >= b ? "met" : "not met")})" : "";
        return string.Create(CultureInfo.InvariantCulture, $"{pe * 100:F0} % / {pt * 100:F0} %{bar}");
    }

    // ------------------------------------------------------------------ 2. LoRA training step

    static void Lora(Options o, List<Row> rows, List<string> notes)
    {
        int B = o.Batch, T = o.Seq;
        var cfg = LlamaConfig.Small with { MaxSeq = Math.Max(T, 16) };
        var lcfg = new LoraConfig { Dropout = o.LoraDropout };
        Console.WriteLine($"\n[lora] small preset ({cfg.ParameterCount / 1e6:F1}M), LoRA r {lcfg.Rank} alpha {lcfg.Alpha} dropout {lcfg.Dropout} on {string.Join(",", lcfg.Targets)}, batch {B} × {T}; load {Load()}");
        using var ops = new CpuBackend();
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        var adapters = m.AddLora(lcfg, seed: 2);
        // B starts at zero in LoRA; give it values so that the check below sees non-zero gradients for A too
        foreach (var (ad, i) in adapters.Select((ad, i) => (ad, i))) ops.Upload(ad.B.W, Init.Normal(ad.B.Length, 0.02f, CounterRng.Derive(3, (ulong)i)));
        var tok = new int[B * T]; var tgt = new int[B * T]; var mask = new float[B * T];
        for (int i = 0; i < tok.Length; i++) { tok[i] = (int)(CounterRng.Hash(5, (ulong)i) % (ulong)cfg.Vocab); mask[i] = 1; }
        for (int i = 0; i < tok.Length; i++) tgt[i] = (i + 1) % T == 0 ? -1 : tok[i + 1];
        var batch = new ModelBatch(B, T, tok, tgt, mask);
        var head = new CrossEntropyHead();
        var trainable = m.TrainableParameters.ToList();

        using var tm = EngineToTorch.Model(m);
        var tp = EngineToTorch.Lora(m, tm, lcfg);
        var sdpa = new SdpaLlama(tm, lcfg.Dropout);
        using var tTok = tensor(tok.Select(x => (long)x).ToArray(), [B, T]);
        using var tTgt = tensor(tgt.Select(x => (long)x).ToArray(), [B, T]);

        // check: loss and every LoRA gradient with dropout off (the masks of the two sides differ)
        foreach (var p in trainable) ops.Fill(p.Grad!, 0f);
        double engLoss = m.Step(batch, head, backward: true, training: false);
        var engGrad = trainable.SelectMany(p => Host(ops, p.Grad!)).ToArray();
        foreach (var p in trainable) ops.Fill(p.Grad!, 0f);
        using (var _ = NewDisposeScope())
        {
            var loss = SdpaLlama.Loss(sdpa.Logits(tTok, training: false), tTgt);
            loss.backward();
            CheckScalar("LoRA step loss (SDPA model, dropout off)", engLoss, loss.item<float>(), 1e-4);
            Check("LoRA gradients, all A and B (SDPA model)", engGrad, tp.SelectMany(p => Host(p.grad!)).ToArray(), 1e-3);
            foreach (var p in tp) p.grad!.zero_();
            var loss2 = TorchLlama.CrossEntropy(tm.Forward(tTok, null), tTgt);
            loss2.backward();
            CheckScalar("LoRA step loss (parity model TorchLlama)", engLoss, loss2.item<float>(), 1e-4);
            Check("LoRA gradients, all A and B (parity model)", engGrad, tp.SelectMany(p => Host(p.grad!)).ToArray(), 1e-3);
            foreach (var p in tp) p.grad!.zero_();
        }

        int step = 1;
        void EngineStep()
        {
            foreach (var p in trainable) ops.Fill(p.Grad!, 0f);
            m.Pass.StepSeed = (ulong)step;
            m.Step(batch, head, backward: true);
            foreach (var p in trainable) ops.AdamW(p.W, p.Grad!, p.M!, p.V!, p.Length, 3e-4f, 0.9f, 0.999f, 1e-8f, 0f, step);
            step++;
        }
        var opt = torch.optim.AdamW(tp, lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0);
        var opt2 = torch.optim.AdamW(tp, lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0);
        void TorchStep(Func<TTensor> loss, OptimizerHelper op)
        {
            using var _ = NewDisposeScope();
            op.zero_grad();
            loss().backward();
            op.step();
        }
        var eng = new Side("NegDistill LoRA step", EngineStep);
        var tSdpa = new Side("TorchSharp LoRA step (SDPA)", () => TorchStep(() => SdpaLlama.Loss(sdpa.Logits(tTok, true), tTgt), opt));
        var tPar = new Side("TorchSharp LoRA step (parity model, no dropout)", () => TorchStep(() => TorchLlama.CrossEntropy(tm.Forward(tTok, null), tTgt), opt2));
        string load0 = Load1();
        Measure(o, eng, tSdpa, tPar);
        string load = $"{load0} → {Load1()}";
        double tokens = B * T;
        AddVariants(rows, "≥ 1",
            new Row($"LoRA step, small, {B}×{T} (fwd+bwd+AdamW); torch: SDPA attention", Unit.TokensPerS, tokens, eng, tSdpa, "", load),
            new Row($"LoRA step; torch: the parity model (explicit masked softmax, no LoRA dropout)", Unit.TokensPerS, tokens, eng, tPar, "", load));

        // forward + loss only, no gradient: splits the step into forward and backward + optimiser
        var engF = new Side("NegDistill forward + loss", () => m.Step(batch, head, backward: false, training: false));
        var torF = new Side("TorchSharp forward + loss (SDPA, no_grad)", () =>
        {
            using var _ = NewDisposeScope(); using var g = no_grad();
            SdpaLlama.Loss(sdpa.Logits(tTok, false), tTgt).item<float>();
        });
        load0 = Load1();
        Measure(o, engF, torF);
        rows.Add(new Row($"  of which forward + loss (no grad)", Unit.TokensPerS, tokens, engF, torF, "", $"{load0} → {Load1()}"));

        // where the engine's step time goes (one profiled step after one warm-up, not part of the timing)
        using var prof = new ProfilingBackend(new CpuBackend());
        using var mp = new LlamaModel(prof, cfg, DType.F32, seed: 1);
        mp.AddLora(lcfg, seed: 2);
        var ptrain = mp.TrainableParameters.ToList();
        for (int s = 1; s <= 2; s++)
        {
            if (s == 2) prof.Reset();
            foreach (var p in ptrain) prof.Fill(p.Grad!, 0f);
            mp.Pass.StepSeed = (ulong)s;
            mp.Step(batch, head, backward: true);
            foreach (var p in ptrain) prof.AdamW(p.W, p.Grad!, p.M!, p.V!, p.Length, 3e-4f, 0.9f, 0.999f, 1e-8f, 0f, s);
        }
        var rep = prof.Report();
        double tot = rep.Sum(r => r.Seconds);
        string shares = string.Join(", ", rep.Take(6).Select(r => $"{r.Op} {100 * r.Seconds / tot:F0} %"));
        Console.WriteLine($"  engine step, one profiled step: {tot * 1000:F0} ms; {shares}");
        notes.Add($"LoRA step, engine's own breakdown (one profiled step, {tot * 1000:F0} ms): {shares}.");
    }

    // ------------------------------------------------------------------ 3. NCE loss

    static void NceCase(Options o, List<Row> rows)
    {
        const int V = 32000, SeqLen = 256;
        const float Tau = 1f, A = 0.5f;
        int n = o.NceRows, B = n / SeqLen;
        Console.WriteLine($"\n[nce] NCE loss and dL/dz_s, {n} rows × V {V} (a {A}, τ {Tau}, {B} sequences of {SeqLen}); load {Load()}");
        // the inputs of benchmarks/NegDistill.Benchmarks/NceLossBenchmarks.cs
        var rnd = new Random(42);
        float[] Logits() { var z = new float[(long)n * V]; for (long i = 0; i < z.LongLength; i++) z[i] = (rnd.NextSingle() * 2 - 1) * 4; return z; }
        var zsInit = Logits();
        var hNat = Logits();
        var hNeg = (float[])hNat.Clone();
        for (long i = 0; i < hNeg.LongLength; i++) hNeg[i] += (rnd.NextSingle() * 2 - 1) * 0.5f;
        var mask = new float[n]; var targets = new int[n];
        for (int b = 0; b < B; b++)
        {
            int len = SeqLen - 16 * b;
            for (int t = 0; t < SeqLen; t++)
            {
                mask[b * SeqLen + t] = t < len ? 1 : 0;
                targets[b * SeqLen + t] = t + 1 < len ? rnd.Next(V) : -1;
            }
        }

        Console.WriteLine($"  libtorch's large temporaries: {(o.TorchKeepMemory ? TorchKeepsMemory(true) : "glibc defaults (fresh mmap per block of 32 MB or more)")}");
        try { NceRun(o, rows, n, B, zsInit, hNat, hNeg, mask, targets); }
        finally { if (o.TorchKeepMemory) Console.WriteLine($"  after the NCE case: {TorchKeepsMemory(false)}"); }
    }

    static void NceRun(Options o, List<Row> rows, int n, int B, float[] zsInit, float[] hNat, float[] hNeg, float[] mask, int[] targets)
    {
        const int V = 32000, SeqLen = 256;
        const float Tau = 1f, A = 0.5f;
        using var ops = new CpuBackend();
        ETensor Up(float[] d) { var t = ops.Alloc("z", DType.F32, n, V); ops.Upload(t, d); return t; }
        using var zs = Up(zsInit); using var zNat = Up(hNat); using var zNeg = Up(hNeg);
        using var y = ops.Alloc("y", DType.I32, n); ops.Upload(y, targets);
        using var w = ops.Alloc("w", DType.F32, n); using var kl = ops.Alloc("kl", DType.F32, n);
        using var ce = ops.Alloc("ce", DType.F32, n); using var kd = ops.Alloc("kd", DType.F32, n);
        var klHost = new float[n];
        // method.md (and the engine's NceHead): CE averages over the rows with a next-token target, KD over the attention mask
        double ceScale = 1.0 / targets.Count(y => y >= 0), kdScale = 1.0 / mask.Sum();
        double engLoss = 0;
        void Fused()
        {
            ops.NceKl(zNat, zNeg, kl, n, V, Tau);
            ops.Download(kl, klHost);
            var beta = Nce.SequenceBeta<float>(klHost, mask, B, SeqLen);
            ops.Upload(w, Nce.RowWeights(beta, SeqLen, mask));
            ops.NceDistillFused(zs, zNat, y, w, ce, kd, n, V, Tau, A, ceScale, kdScale, true);
            engLoss = (1 - A) * ceScale * ops.Sum(ce, n) + A * kdScale * ops.Sum(kd, n);
        }
        void Restore() => ops.Upload(zs, zsInit);                            // the fused op overwrote z_s with dL/dz_s

        using var tZs = tensor(zsInit, [B, SeqLen, V]).requires_grad_(true);
        using var tNat = tensor(hNat, [B, SeqLen, V]);
        using var tNeg = tensor(hNeg, [B, SeqLen, V]);
        using var tY = tensor(targets.Select(x => (long)x).ToArray(), [B, SeqLen]);
        using var tMask = tensor(mask, [B, SeqLen]);
        float TorchCall(bool lean)
        {
            using var _ = NewDisposeScope();
            tZs.grad?.Dispose();                                               // set_to_none: backward writes a fresh gradient
            tZs.grad = null;
            var loss = lean ? LeanNce.Loss(tZs, tNat, tNeg, tY, tMask, A, Tau)
                            : TorchNce.Loss(tZs, tNat, tNeg, tY, tMask, A, Tau).Loss;
            loss.backward();
            return loss.item<float>();
        }

        // check: loss, KL per row and the whole gradient
        Fused();
        var engGrad = Host(ops, zs);
        Restore();
        float leanLoss = TorchCall(true);
        CheckScalar("NCE loss (LeanNce)", engLoss, leanLoss, 1e-4);
        Check("NCE dL/dz_s (LeanNce)", engGrad, Host(tZs.grad!), 1e-3);
        using (var _ = NewDisposeScope())
        {
            float parLoss = TorchCall(false);
            CheckScalar("NCE loss (TorchNce.Loss)", engLoss, parLoss, 1e-4);
            Check("NCE dL/dz_s (TorchNce.Loss)", engGrad, Host(tZs.grad!), 1e-3);
            using var g = no_grad();
            Check("NCE KL per row (TorchNce.Kl)", klHost, Host(TorchNce.Kl(tNat, tNeg, Tau)), 1e-3);
        }
        engGrad = null!;

        var eng = new Side("NegDistill NceKl + β + NceDistillFused", Fused, Restore);
        var lean = new Side("TorchSharp op by op + autograd (LeanNce)", () => TorchCall(true));
        var par = new Side("TorchSharp op by op + autograd (TorchNce.Loss)", () => TorchCall(false));
        string load0 = Load1();
        Measure(o, eng, lean, par);
        string load = $"{load0} → {Load1()}";
        AddVariants(rows, "≥ 2",
            new Row($"NCE loss + dL/dz_s, {n}×{V:N0}, fused; torch: op by op, LeanNce", Unit.MsPerCall, 1, eng, lean, "", load),
            new Row($"NCE, fused; torch: op by op, the parity TorchNce.Loss", Unit.MsPerCall, 1, eng, par, "", load));
        tZs.grad?.Dispose();
    }

    // ------------------------------------------------------------------ 4. decode

    static void Decode(Options o, List<Row> rows, List<string> notes)
    {
        int B = o.DecodeBatch, P = o.Prompt, N = o.NewTokens;
        var cfg = LlamaConfig.Small with { MaxSeq = Math.Max(LlamaConfig.Small.MaxSeq, P + N) };
        Console.WriteLine($"\n[decode] small preset, greedy, batch {B}, prompts of {P} tokens, {N} new tokens each; load {Load()}");
        using var ops = new ProfilingBackend(new CpuBackend()) { Enabled = false };   // timed for the breakdown run only
        using var m = new LlamaModel(ops, cfg, DType.F32, seed: 1);
        var prompts = Enumerable.Range(0, B)
            .Select(b => Enumerable.Range(0, P).Select(i => (int)(CounterRng.Hash((ulong)b, (ulong)i) % (ulong)cfg.Vocab)).ToArray()).ToList();
        var settings = new SamplerSettings
        {
            Temperature = 0f, MaxNewTokens = N, Eos = -1, Slots = B, MaxSeq = P + N, MaxRowsPerStep = B * P, Seed = 7,
        };
        using var sampler = new Sampler(m, settings);
        IReadOnlyList<Sample> EngineRun() => sampler.Run(prompts.Select((p, i) => new SampleRequest(i, p, 1)));

        using var tm = EngineToTorch.Model(m);
        using var tPrompts = tensor(prompts.SelectMany(p => p.Select(x => (long)x)).ToArray(), [B, P]);
        using var dec = new SdpaDecoder(tm, B, P + N);
        using var cache = tm.NewCache(B, P + N);
        long[,] ParityRun()
        {
            var outp = new long[B, N];
            cache.Length = 0;
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var next = tm.Prefill(cache, tPrompts).argmax(-1);
            for (int i = 0; ; i++)
            {
                var h = next.data<long>().ToArray();
                for (int b = 0; b < B; b++) outp[b, i] = h[b];
                if (i == N - 1) break;
                using var step = NewDisposeScope();
                next = tm.DecodeStep(cache, next).argmax(-1).MoveToOuterDisposeScope();
            }
            return outp;
        }

        // check: the greedy tokens of both TorchSharp loops against the engine's
        var engTok = EngineRun();
        void Agree(string what, long[,] t)
        {
            int same = 0, firstDiff = N;
            for (int b = 0; b < B; b++)
                for (int i = 0; i < N; i++)
                    if (engTok[b].Tokens.Length > i && engTok[b].Tokens[i] == t[b, i]) same++;
                    else firstDiff = Math.Min(firstDiff, i);
            int need = Math.Min(8, N);
            bool ok = firstDiff >= need;
            Console.WriteLine($"  check greedy tokens ({what}): {same}/{B * N} equal, first difference at step {(firstDiff == N ? "none" : firstDiff.ToString())} (the first {need} steps must agree) {(ok ? "ok" : "FAILED")}");
            if (!ok) throw new CheckFailed($"greedy decode ({what}) differs from the engine at step {firstDiff}");
        }
        Agree("SdpaDecoder", dec.Generate(tPrompts, N));
        Agree("TorchLlama Prefill/DecodeStep", ParityRun());

        var eng = new Side("NegDistill Sampler (KV cache, greedy)", () => EngineRun());
        var tSdpa = new Side("TorchSharp KV-cache loop (SdpaDecoder)", () => dec.Generate(tPrompts, N));
        var tPar = new Side("TorchSharp KV-cache loop (TorchLlama)", () => ParityRun());
        string load0 = Load1();
        Measure(o, eng, tSdpa, tPar);
        string load = $"{load0} → {Load1()}";
        double tokens = (double)B * N;
        AddVariants(rows, "≥ 1.2",
            new Row($"Decode, small, batch {B}, {P}-token prompts, {N} new, greedy; torch: SdpaDecoder", Unit.TokensPerS, tokens, eng, tSdpa, "", load),
            new Row($"Decode; torch: TorchLlama's Prefill/DecodeStep", Unit.TokensPerS, tokens, eng, tPar, "", load));

        // the engine's own breakdown of one more decode
        var tm0 = InferenceTimings.Measure(ops, () => EngineRun());
        double tt = tm0.Total.TotalSeconds;
        string shares = $"matmul {100 * tm0.Matmul.TotalSeconds / tt:F0} %, attention {100 * tm0.Attention.TotalSeconds / tt:F0} %, sampling {100 * tm0.Sampling.TotalSeconds / tt:F0} %, other {100 * tm0.Other.TotalSeconds / tt:F0} %";
        Console.WriteLine($"  engine decode, one timed run: {tt * 1000:F0} ms in the timed ops; {shares}");
        notes.Add($"Decode, engine's own breakdown (one run, {tt * 1000:F0} ms of timed ops): {shares}.");
    }

    // ------------------------------------------------------------------ table

    /// <summary>Adds the rows of one case's TorchSharp variants; the issue's bar is judged against the
    /// fastest variant of the run (the one with the lowest median time).</summary>
    static void AddVariants(List<Row> rows, string bar, params Row[] variants)
    {
        var best = variants.MinBy(r => r.Torch.Median)!;
        foreach (var r in variants) rows.Add(ReferenceEquals(r, best) ? r with { Bar = bar } : r);
    }

    static string Table(List<Row> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| case | NegDistill | TorchSharp | ratio | bar | of FMA peak (NegDistill / TorchSharp) | load |");
        sb.AppendLine("|---|---|---|---|---|---|---|");
        foreach (var r in rows)
        {
            double ratio = r.Torch.Median / r.Engine.Median;
            string bar = r.Bar == "" ? "" : ratio >= double.Parse(r.Bar.TrimStart('≥', ' '), CultureInfo.InvariantCulture) ? $"{r.Bar}: met" : $"{r.Bar}: not met";
            sb.AppendLine($"| {r.Case} | {Fmt(r, r.Engine)} | {Fmt(r, r.Torch)} | {ratio.ToString("F2", CultureInfo.InvariantCulture)} | {bar} | {r.Peak} | {r.Load} |");
        }
        return sb.ToString();
    }

    static string Fmt(Row r, Side s) => r.Unit switch
    {
        Unit.GflopPerS => $"{r.Work / s.Median / 1e9:F0} GFLOP/s ({r.Work / s.Min / 1e9:F0})",
        Unit.TokensPerS => $"{r.Work / s.Median:F0} tok/s ({r.Work / s.Min:F0})",
        _ => $"{s.Median * 1000:F0} ms ({s.Min * 1000:F0})",
    };

    static class Stats
    {
        public static double Median(List<double> x)
        {
            var s = x.OrderBy(v => v).ToArray();
            return s.Length % 2 == 1 ? s[s.Length / 2] : 0.5 * (s[s.Length / 2 - 1] + s[s.Length / 2]);
        }
    }
}
