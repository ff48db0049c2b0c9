using System.Diagnostics;
using NegDistill.Model;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Infer;

/// <summary>A prompt to sample <see cref="N"/> continuations of (method.md Step 3: N = 16 candidates per question).</summary>
/// <param name="Id">caller's id, unique per run: it seeds the request's random streams</param>
/// <param name="Prompt">token ids, BOS included</param>
public sealed record SampleRequest(long Id, int[] Prompt, int N);

public enum StopReason
{
    /// <summary>The model produced the EOS token (not in <see cref="Sample.Tokens"/>, its probability in <see cref="Sample.LogProb"/>).</summary>
    Eos,
    /// <summary>The decoded continuation contains a stop string (its tokens are kept).</summary>
    StopString,
    /// <summary><see cref="SamplerSettings.MaxNewTokens"/> tokens were generated.</summary>
    MaxNewTokens,
    /// <summary>The slot's cache is full: prompt + continuation reached <see cref="SamplerSettings.MaxSeq"/>.</summary>
    CacheFull,
}

/// <summary>One sampled continuation.</summary>
/// <param name="Tokens">the generated tokens, EOS excluded</param>
/// <param name="LogProb">Σ log p(token) at temperature 1 over the <paramref name="TokenCount"/> sampled tokens
/// (the EOS included when it ended the sample): the candidate probability of the WS vote</param>
public sealed record Sample(long RequestId, int Index, int[] Tokens, double LogProb, int TokenCount, StopReason StopReason);

public sealed record SamplerSettings
{
    /// <summary>≤ 0: greedy.</summary>
    public float Temperature { get; init; } = 1f;
    /// <summary>≤ 0 or ≥ V: off.</summary>
    public int TopK { get; init; }
    /// <summary>≤ 0 or ≥ 1: off (as in llama2.c).</summary>
    public float TopP { get; init; } = 1f;
    public int MaxNewTokens { get; init; } = 256;
    public int Eos { get; init; } = 2;
    /// <summary>A sample stops once its decoded continuation contains one of these; needs <see cref="Decode"/>.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Token ids → text, for the stop strings.</summary>
    public Func<IReadOnlyList<int>, string>? Decode { get; init; }
    /// <summary>S: sequences decoded at once.</summary>
    public int Slots { get; init; } = 16;
    /// <summary>Tmax: positions per slot (prompt + continuation).</summary>
    public int MaxSeq { get; init; } = 512;
    /// <summary>Rows per forward: every active slot's decode row, the rest for prefill chunks. 0: Slots + 256.</summary>
    public int MaxRowsPerStep { get; init; }
    public ulong Seed { get; init; }
    /// <summary>The KV cache's element type: F32, or BF16/F16 at half the bytes (twice the slots in the same memory).</summary>
    public Runtime.DType Cache { get; init; } = Runtime.DType.F32;
    /// <summary>Shared prompts: the number of prompt slots (0: off, every sequence holds its own prompt).
    /// With them, the N samples of a request read one copy of its prompt, prefilled once, and each slot
    /// holds only its continuation (<see cref="MaxNewTokens"/> positions).</summary>
    public int SharedPrompts { get; init; }
    /// <summary>Positions per prompt slot: the longest prompt less its last token (which every sample feeds itself).</summary>
    public int PromptPositions { get; init; }

    /// <summary>The cache layout these settings allocate.</summary>
    public KvLayout Layout => SharedPrompts > 0
        ? new KvLayout(Slots, Math.Min(MaxNewTokens, MaxSeq), SharedPrompts, Math.Max(1, PromptPositions))
        : KvLayout.Plain(Slots, MaxSeq);
}

/// <summary>Counters of the last <see cref="Sampler.Run"/>.</summary>
public sealed class SamplerStats
{
    public int Steps;
    /// <summary>PromptTokens: prompt rows forwarded (with shared prompts each prompt's once, plus each
    /// sample's last prompt token).</summary>
    public long PromptTokens, GeneratedTokens, Rows;
    public TimeSpan Elapsed;
    /// <summary>Generated tokens per second of wall time (prefill included in the time).</summary>
    public double TokensPerSecond => GeneratedTokens / Math.Max(Elapsed.TotalSeconds, 1e-12);
    public double MeanRowsPerStep => Steps == 0 ? 0 : (double)Rows / Steps;
    public override string ToString() =>
        $"{GeneratedTokens} tokens in {Elapsed.TotalSeconds:F2} s = {TokensPerSecond:F1} tokens/s ({PromptTokens} prompt tokens, {Steps} steps, {MeanRowsPerStep:F1} rows/step)";
}

/// <summary>
/// Batched sampling with a KV cache and continuous batching. Every (request, index) is one sequence
/// in one of S cache slots; each step is one <see cref="LlamaModel.ForwardRowsDevice"/> call whose
/// rows are the single decode row of every slot that has a token to feed, then prefill chunks of
/// newly admitted prompts in the remaining row budget. The logits of each slot whose rows are all
/// cached are sampled on the device (<see cref="IBackend.SampleRows"/>). A sequence that stops (EOS,
/// stop string, budget, full cache) frees its slot at once and the next waiting (request, index) is
/// admitted into it, so a straggler never holds the batch.
/// With <see cref="SamplerSettings.SharedPrompts"/>, a request's prompt but its last token is prefilled
/// once into a prompt slot (rows of slot id S + prompt slot, no logits); its samples' slots are linked to
/// it (<see cref="KvCache.Link"/>) and each feeds the prompt's last token itself as its first decode row,
/// once the prompt is cached, so no sample's first token needs logits of another's row. A request waits
/// for a free prompt slot in queue order; the slot is freed when its last sample ends.
/// Randomness: sample (request, index) draws its t-th token with CounterRng seed
/// <see cref="Sampling.SampleSeed"/>(Seed, request id, index) and counter t, so the candidates do not
/// depend on the number of slots, the admission order or the backend's scheduling. This is llama2.c's
/// decoder loop (forward the last token at its position, sample, append) run for S sequences at once.
/// </summary>
public sealed class Sampler : IDisposable
{
    readonly LlamaModel _model;
    readonly SamplerSettings _s;

    public Sampler(LlamaModel model, SamplerSettings settings)
    {
        if (settings.MaxNewTokens < 1) throw new ArgumentOutOfRangeException(nameof(settings), "MaxNewTokens must be at least 1");
        if (settings.StopStrings.Count > 0 && settings.Decode == null) throw new ArgumentException("stop strings need a Decode function");
        int rows = settings.MaxRowsPerStep > 0 ? settings.MaxRowsPerStep : settings.Slots + 256;
        if (rows < settings.Slots) throw new ArgumentOutOfRangeException(nameof(settings), $"MaxRowsPerStep {rows} is below the {settings.Slots} slots' decode rows");
        (_model, _s) = (model, settings);
        if (settings.SharedPrompts < 0) throw new ArgumentOutOfRangeException(nameof(settings), "SharedPrompts must not be negative");
        Cache = new KvCache(model, settings.Layout, settings.MaxSeq, rows, settings.Cache);
    }

    public KvCache Cache { get; }
    public SamplerStats Stats { get; private set; } = new();

    /// <summary>A request's shared prompt: positions 0..Length−1 in prompt slot Slot.</summary>
    sealed class SharedPrompt
    {
        public required int Slot, Length;
        public int Cached;                                   // prompt positions in the cache
        public int Refs;                                     // samples not finished yet
    }

    /// <summary>A sequence in a slot.</summary>
    sealed class Seq
    {
        public required SampleRequest Req;
        public SharedPrompt? Prompt;
        public required int Index, Slot;
        public required ulong Seed;
        public required List<int> Tokens;                  // prompt + generated
        public int Cached;                                   // tokens in the cache: positions 0..Cached−1
        public int Generated;
        public double LogProb;
        public int TextLength;                               // decoded length at the last stop-string check
    }

    /// <summary>Samples every request's N continuations. <paramref name="onSample"/> sees each sample
    /// when it finishes; the result is ordered by request (input order), then index.</summary>
    public IReadOnlyList<Sample> Run(IEnumerable<SampleRequest> requests, Action<Sample>? onSample = null)
    {
        var reqs = requests.ToList();
        foreach (var r in reqs)
        {
            if (r.N < 1) throw new ArgumentException($"request {r.Id}: N = {r.N}");
            if (r.Prompt.Length < 1) throw new ArgumentException($"request {r.Id}: empty prompt");
            if (r.Prompt.Length >= _s.MaxSeq) throw new ArgumentException($"request {r.Id}: prompt of {r.Prompt.Length} tokens leaves no room in a cache of {_s.MaxSeq}");
            if (_s.SharedPrompts > 0 && r.Prompt.Length - 1 > Cache.Layout.PromptPositions)
                throw new ArgumentException($"request {r.Id}: prompt of {r.Prompt.Length} tokens is longer than the prompt slots' {Cache.Layout.PromptPositions} positions + 1");
        }
        if (reqs.Select(r => r.Id).Distinct().Count() != reqs.Count) throw new ArgumentException("request ids must be unique");

        var o = _model.Ops;
        var stats = new SamplerStats();
        var sw = Stopwatch.StartNew();
        var waiting = new Queue<(SampleRequest Req, int Index)>(reqs.SelectMany(r => Enumerable.Range(0, r.N).Select(i => (r, i))));
        var slots = new Seq?[_s.Slots];
        var active = new List<Seq>();                       // admission order
        bool shared = _s.SharedPrompts > 0;
        var freePrompts = new SortedSet<int>(Enumerable.Range(0, Cache.Layout.PromptSlots));
        var prompts = new Dictionary<long, SharedPrompt>();  // by request id, while its samples run
        var filling = new List<SharedPrompt>();              // prompts not yet fully cached, in admission order
        var promptTokens = new Dictionary<SharedPrompt, int[]>();
        var done = new List<Sample>();
        int maxRows = Cache.MaxRows, v = _model.Config.Vocab;
        var tok = new int[maxRows]; var slotOf = new int[maxRows]; var pos = new int[maxRows];
        var logitRows = new List<int>(); var sampled = new List<Seq>();
        var seeds = new int[2 * maxRows]; var counters = new int[maxRows];
        var outTok = new int[maxRows]; var outLp = new float[maxRows];

        while (true)
        {
            for (int si = 0; si < slots.Length && waiting.Count > 0; si++)
            {
                if (slots[si] != null) continue;
                var (req, index) = waiting.Peek();
                SharedPrompt? sp = null;
                if (shared && req.Prompt.Length > 1 && !prompts.TryGetValue(req.Id, out sp))
                {
                    if (freePrompts.Count == 0) break;                 // the request waits for a prompt slot, in queue order
                    sp = new SharedPrompt { Slot = freePrompts.Min, Length = req.Prompt.Length - 1, Refs = req.N };
                    freePrompts.Remove(sp.Slot);
                    prompts[req.Id] = sp;
                    filling.Add(sp);
                    promptTokens[sp] = req.Prompt;
                    stats.PromptTokens += sp.Length;
                }
                waiting.Dequeue();
                var s = new Seq { Req = req, Index = index, Slot = si, Seed = Sampling.SampleSeed(_s.Seed, req.Id, index), Tokens = [.. req.Prompt], Prompt = sp };
                if (sp != null) { Cache.Link(si, sp.Slot, sp.Length); s.Cached = sp.Length; }
                slots[si] = s;
                active.Add(s);
                stats.PromptTokens += req.Prompt.Length - s.Cached;
            }
            if (active.Count == 0) break;

            // rows: decode rows first (one pending token, its shared prompt cached), then the shared prompts'
            // prefill chunks, then the sequences' own prefill chunks, in admission order
            int n = 0;
            logitRows.Clear(); sampled.Clear();
            void AddRows(Seq s, int count)
            {
                for (int i = 0; i < count; i++)
                {
                    tok[n] = s.Tokens[s.Cached + i]; slotOf[n] = s.Slot; pos[n] = s.Cached + i;
                    n++;
                }
                s.Cached += count;
                if (s.Cached == s.Tokens.Count) { logitRows.Add(n - 1); sampled.Add(s); }
            }
            bool Ready(Seq s) => s.Prompt == null || s.Prompt.Cached == s.Prompt.Length;
            foreach (var s in active) if (s.Tokens.Count - s.Cached == 1 && Ready(s)) AddRows(s, 1);
            foreach (var sp in filling)
            {
                int count = Math.Min(sp.Length - sp.Cached, maxRows - n);
                var prompt = promptTokens[sp];
                for (int i = 0; i < count; i++)
                {
                    tok[n] = prompt[sp.Cached + i]; slotOf[n] = _s.Slots + sp.Slot; pos[n] = sp.Cached + i;
                    n++;
                }
                sp.Cached += count;
            }
            filling.RemoveAll(sp => sp.Cached == sp.Length);
            foreach (var s in active)
            {
                int pending = s.Tokens.Count - s.Cached;
                if (pending > 1 && n < maxRows) AddRows(s, Math.Min(pending, maxRows - n));
            }

            _model.ForwardRowsDevice(tok.AsSpan(0, n), slotOf.AsSpan(0, n), pos.AsSpan(0, n), Cache, logitRows.ToArray());
            stats.Steps++; stats.Rows += n;
            int m = logitRows.Count;
            if (m > 0)
            {
                for (int i = 0; i < m; i++)
                {
                    var s = sampled[i];
                    seeds[2 * i] = (int)(uint)s.Seed; seeds[2 * i + 1] = (int)(uint)(s.Seed >> 32);
                    counters[i] = s.Generated;
                }
                o.Upload(Cache.RowSeed, seeds.AsSpan(0, 2 * m));
                o.Upload(Cache.RowCounter, counters.AsSpan(0, m));
                o.SampleRows(o.View(Cache.Logits, 0, m, v), Cache.Sampled, Cache.SampledLogProb, Cache.RowSeed, Cache.RowCounter, m, v,
                    _s.Temperature, _s.TopK, _s.TopP);
                o.Download(Cache.Sampled, outTok.AsSpan(0, m));
                o.Download(Cache.SampledLogProb, outLp.AsSpan(0, m));
            }

            for (int i = 0; i < m; i++)
            {
                var s = sampled[i];
                int t = outTok[i];
                if (t < 0) throw new NonFiniteException($"sampling request {s.Req.Id}, sample {s.Index}: the logits are NaN at generated token {s.Generated} (non-finite weights or activations in the model)");
                s.Generated++;
                s.LogProb += outLp[i];
                stats.GeneratedTokens++;
                StopReason? stop = null;
                if (t == _s.Eos) stop = StopReason.Eos;
                else
                {
                    s.Tokens.Add(t);
                    if (HitsStopString(s)) stop = StopReason.StopString;
                    else if (s.Generated >= _s.MaxNewTokens) stop = StopReason.MaxNewTokens;
                    else if (s.Tokens.Count >= _s.MaxSeq) stop = StopReason.CacheFull;   // no position left to feed it
                }
                if (stop is not { } reason) continue;
                var sample = new Sample(s.Req.Id, s.Index, s.Tokens.Skip(s.Req.Prompt.Length).ToArray(), s.LogProb, s.Generated, reason);
                done.Add(sample);
                onSample?.Invoke(sample);
                slots[s.Slot] = null;
                active.Remove(s);
                if (s.Prompt is { } p)
                {
                    Cache.Link(s.Slot, 0, 0);
                    if (--p.Refs == 0) { freePrompts.Add(p.Slot); prompts.Remove(s.Req.Id); promptTokens.Remove(p); }
                }
            }
        }
        stats.Elapsed = sw.Elapsed;
        Stats = stats;
        var order = reqs.Select((r, i) => (r.Id, i)).ToDictionary(x => x.Id, x => x.i);
        return done.OrderBy(x => order[x.RequestId]).ThenBy(x => x.Index).ToList();
    }

    bool HitsStopString(Seq s)
    {
        if (_s.StopStrings.Count == 0) return false;
        int p = s.Req.Prompt.Length;
        string text = _s.Decode!(s.Tokens.GetRange(p, s.Tokens.Count - p));
        int from = s.TextLength;
        s.TextLength = text.Length;
        foreach (var stop in _s.StopStrings)
            if (stop.Length > 0 && text.IndexOf(stop, Math.Clamp(from - stop.Length + 1, 0, text.Length), StringComparison.Ordinal) >= 0) return true;
        return false;
    }

    public void Dispose() => Cache.Dispose();
}
