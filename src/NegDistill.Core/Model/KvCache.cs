using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>
/// Where sequences live in a KV cache's pool of cache rows (one row = one position's K or V, C values):
/// <see cref="Slots"/> sequences of <see cref="OwnPositions"/> rows each, then <see cref="PromptSlots"/>
/// shared prompts of <see cref="PromptPositions"/> rows each. Without prompt slots a slot holds its
/// whole sequence (positions 0..OwnPositions−1); a slot linked to a prompt slot holds only the positions
/// from the prompt's length on, so N candidates of one question keep one copy of its prompt.
/// </summary>
public sealed record KvLayout(int Slots, int OwnPositions, int PromptSlots = 0, int PromptPositions = 0)
{
    public static KvLayout Plain(int slots, int maxSeq) => new(slots, maxSeq);
    public long Rows => (long)Slots * OwnPositions + (long)PromptSlots * PromptPositions;
    public int OwnBase(int slot) => slot * OwnPositions;
    public int PromptBase(int promptSlot) => Slots * OwnPositions + promptSlot * PromptPositions;
    public override string ToString() => PromptSlots == 0 ? $"{Slots} slots × {OwnPositions} positions"
        : $"{Slots} slots × {OwnPositions} positions + {PromptSlots} shared prompts × {PromptPositions}";
}

/// <summary>
/// The state of batched decoding on one backend: per layer, K and V of every cached position as a pool
/// (<see cref="KvLayout.Rows"/>, C) each in F32 or, at half the bytes, BF16/F16 (<see cref="CacheType"/>),
/// laid out by <see cref="Layout"/>; and the row buffers of <see cref="LlamaModel.ForwardRows"/>, sized to
/// <see cref="MaxRows"/> rows and separate from the model's training activations, so that inference
/// never reallocates or disturbs them. Slot ids 0..S−1 are the sequences' own slots, S..S+Sp−1 the
/// prompt slots; <see cref="Link"/> points a slot's first positions at a prompt slot.
/// Memory: 2·L·P·C·e bytes of cache, P = S·Tmax (+ Sp·Tp), e = 4 (F32) or 2 (LLaMA-7b, 16 slots of 512
/// positions: 8.6 GB in F32, 4.3 GB in BF16) plus MaxRows·(7C + 1 + 3F + V + 11)·4 bytes of rows;
/// <see cref="MemoryPlan.ForSampling"/> adds it up.
/// </summary>
public sealed class KvCache : IDisposable
{
    public KvCache(LlamaModel model, int slots, int maxSeq, int maxRows, DType cache = DType.F32)
        : this(model, KvLayout.Plain(slots, maxSeq), maxSeq, maxRows, cache) { }

    /// <param name="maxSeq">positions per sequence (prompt + continuation), at most the model's context</param>
    public KvCache(LlamaModel model, KvLayout layout, int maxSeq, int maxRows, DType cache = DType.F32)
    {
        var cfg = model.Config;
        if (layout.Slots < 1) throw new ArgumentOutOfRangeException(nameof(layout), layout.Slots, "a KV cache needs at least one slot");
        if (maxSeq < 1 || maxSeq > cfg.MaxSeq)
            throw new ArgumentOutOfRangeException(nameof(maxSeq), maxSeq, $"cache length must be in [1, {cfg.MaxSeq}] (the model's max_position_embeddings)");
        if (layout.OwnPositions < 1 || layout.PromptSlots < 0 || layout.PromptPositions < 0 || (layout.PromptSlots > 0 && layout.PromptPositions < 1))
            throw new ArgumentOutOfRangeException(nameof(layout), layout, "positions per slot must be positive");
        if (layout.Rows > int.MaxValue / cfg.Dim) throw new ArgumentOutOfRangeException(nameof(layout), layout, "the cache pool is too large for one tensor per layer");
        if (maxRows < 1) throw new ArgumentOutOfRangeException(nameof(maxRows), maxRows, "at least one row per forward");
        (Model, Layout, MaxSeq, MaxRows, CacheType) = (model, layout, maxSeq, maxRows, cache);
        _link = Enumerable.Repeat((-1, 0), layout.Slots).ToArray();
        var o = model.Ops;
        var kv = ActivationSizes.Alloc(o, "", ActivationSizes.KvCache(cfg, layout.Rows, cache));
        K = Enumerable.Range(0, cfg.Layers).Select(l => kv[$"kv.k{l}"]).ToArray();
        V = Enumerable.Range(0, cfg.Layers).Select(l => kv[$"kv.v{l}"]).ToArray();
        var r = ActivationSizes.Alloc(o, "", ActivationSizes.KvRows(cfg, maxRows));
        (X, Xn, Q, Kr, Vr, Ao, Tmp, Rstd) = (r["kv.x"], r["kv.xn"], r["kv.q"], r["kv.kr"], r["kv.vr"], r["kv.ao"], r["kv.tmp"], r["kv.rstd"]);
        (G, U, Hh, Logits) = (r["kv.g"], r["kv.u"], r["kv.h"], r["kv.logits"]);
        (Tokens, RowMap, RowPos, LogitRows) = (r["kv.tokens"], r["kv.map"], r["kv.pos"], r["kv.logitrows"]);
        (Sampled, SampledLogProb, RowSeed, RowCounter) = (r["kv.sampled"], r["kv.sampled.lp"], r["kv.seed"], r["kv.counter"]);
        foreach (var a in model.Adapters.Values) a.Reserve(maxRows, training: false);   // adapters' row buffers, once
    }

    readonly (int PromptSlot, int Length)[] _link;
    int[] _map = [];
    internal int[] MapScratch(int rows) => _map.Length >= 3 * rows ? _map : _map = new int[3 * rows];

    /// <summary>Slot <paramref name="slot"/>'s positions 0..length−1 are read from prompt slot
    /// <paramref name="promptSlot"/> (0-based among the prompt slots), its own rows hold positions from
    /// <paramref name="length"/> on. length 0 unlinks.</summary>
    public void Link(int slot, int promptSlot, int length)
    {
        if ((uint)slot >= (uint)Layout.Slots) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"the cache has {Layout.Slots} slots");
        if (length == 0) { _link[slot] = (-1, 0); return; }
        if ((uint)promptSlot >= (uint)Layout.PromptSlots) throw new ArgumentOutOfRangeException(nameof(promptSlot), promptSlot, $"the cache has {Layout.PromptSlots} prompt slots");
        if (length < 0 || length > Layout.PromptPositions) throw new ArgumentOutOfRangeException(nameof(length), length, $"a prompt slot holds {Layout.PromptPositions} positions");
        _link[slot] = (promptSlot, length);
    }

    /// <summary>Row map (pb, L, ob) of position <paramref name="pos"/> of slot id <paramref name="slot"/>
    /// (own slots first, then prompt slots); throws naming the row when the position has no cache row.</summary>
    internal (int, int, int) Map(int slot, int pos, int row)
    {
        var l = Layout;
        if (pos >= MaxSeq) throw new ArgumentException($"row {row}: position {pos} outside the cache's {MaxSeq}");
        if (slot >= l.Slots)
        {
            int ps = slot - l.Slots;
            if (pos >= l.PromptPositions) throw new ArgumentException($"row {row}: position {pos} outside prompt slot {ps}'s {l.PromptPositions}");
            return (l.PromptBase(ps), l.PromptPositions, 0);
        }
        var (p, len) = _link[slot];
        if (pos < len) throw new ArgumentException($"row {row}: position {pos} of slot {slot} lies in its shared prompt (positions 0..{len - 1}), which its rows must not write");
        if (pos - len >= l.OwnPositions) throw new ArgumentException($"row {row}: position {pos} of slot {slot} is past its {l.OwnPositions} own positions");
        return len == 0 ? (0, 0, l.OwnBase(slot)) : (l.PromptBase(p), len, l.OwnBase(slot));
    }

    /// <summary>Own slots plus prompt slots: the slot ids a row may name.</summary>
    public int SlotIds => Layout.Slots + Layout.PromptSlots;

    public LlamaModel Model { get; }
    public KvLayout Layout { get; }
    /// <summary>Sequences decoded at once (own slots).</summary>
    public int Slots => Layout.Slots;
    /// <summary>Positions per sequence (prompt + continuation): every row's position is below it.</summary>
    public int MaxSeq { get; }
    /// <summary>Most rows one <see cref="LlamaModel.ForwardRows"/> call takes.</summary>
    public int MaxRows { get; }
    /// <summary>F32, BF16 or F16: the element type K and V are kept in.</summary>
    public DType CacheType { get; }
    /// <summary>Per layer (P, C): the pool of <see cref="KvLayout.Rows"/> cache rows.</summary>
    public Tensor[] K { get; }
    public Tensor[] V { get; }

    // row buffers (MaxRows, ·)
    internal Tensor X, Xn, Q, Kr, Vr, Ao, Tmp, Rstd, G, U, Hh, Logits;
    internal Tensor Tokens, RowMap, RowPos, LogitRows;
    /// <summary>Sampling I/O of <see cref="IBackend.SampleRows"/>: tokens and log-probabilities out, seeds
    /// (MaxRows, 2) and counters in.</summary>
    public Tensor Sampled { get; }
    public Tensor SampledLogProb { get; }
    public Tensor RowSeed { get; }
    public Tensor RowCounter { get; }

    public long Bytes => K.Sum(t => t.Bytes) + V.Sum(t => t.Bytes);

    public void Dispose()
    {
        foreach (var t in K.Concat(V)) t.Dispose();
        foreach (var t in new[] { X, Xn, Q, Kr, Vr, Ao, Tmp, Rstd, G, U, Hh, Logits, Tokens, RowMap, RowPos, LogitRows, Sampled, SampledLogProb, RowSeed, RowCounter })
            t.Dispose();
    }
}
