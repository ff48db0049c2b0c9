using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using NegDistill.Runtime;

namespace NegDistill.Kernels;

/// <summary>A tensor in accelerator memory: a dense 1-D view of float, int or raw 16-bit words,
/// owning its buffer unless it is a view of another tensor.</summary>
public sealed class IlgpuTensor : Tensor
{
    readonly MemoryBuffer? _owned;
    readonly Action<long>? _onFree;

    internal IlgpuTensor(Accelerator acc, string name, DType dtype, int[] shape, Action<long>? onFree = null) : base(name, dtype, shape)
    {
        _onFree = onFree;
        switch (dtype)
        {
            case DType.F32: { var m = acc.Allocate1D<float>(Length); m.MemSetToZero(); _owned = m; FV = m.View; break; }
            case DType.I32: { var m = acc.Allocate1D<int>(Length); m.MemSetToZero(); _owned = m; IV = m.View; break; }
            default: { var m = acc.Allocate1D<ushort>(Length); m.MemSetToZero(); _owned = m; HV = m.View; break; }
        }
    }

    internal IlgpuTensor(IlgpuTensor parent, long offset, int[] shape) : base(parent.Name + $"@{offset}", parent.DType, shape)
    {
        if (offset < 0 || offset + Length > parent.Length) throw new ArgumentException($"view [{offset}, {offset + Length}) is outside {parent}");
        if (parent.FV.IsValid) FV = parent.FV.SubView(offset, Length);
        if (parent.IV.IsValid) IV = parent.IV.SubView(offset, Length);
        if (parent.HV.IsValid) HV = parent.HV.SubView(offset, Length);
    }

    internal ArrayView<float> FV { get; }
    internal ArrayView<int> IV { get; }
    internal ArrayView<ushort> HV { get; }
    int _freed;
    public override void Dispose()
    {
        if (_owned == null || Interlocked.Exchange(ref _freed, 1) != 0) return;
        _owned.Dispose();
        _onFree?.Invoke(Bytes);
    }
}

/// <summary>Which ILGPU device runs the kernels.</summary>
public enum IlgpuDevice { Auto, Cuda, Cpu }

/// <summary>
/// <see cref="IBackend"/> on ILGPU: CUDA when present, else ILGPU's CPU accelerator, which runs the
/// very same kernels (slowly) so they are tested on machines without a GPU. Kernels are loaded once
/// here, at construction, into typed launchers (ILGPU compiles each on first load).
/// </summary>
public sealed class IlgpuBackend : IBackend
{
    readonly Context _ctx;
    public Accelerator Accelerator { get; }
    readonly int _group;
    readonly MatMulKernels.Launcher _mm;
    readonly ElementwiseKernels.Launcher _ew;
    readonly EmbeddingKernels.Launcher _emb;
    readonly RmsNormKernels.Launcher _rms;
    readonly RopeKernels.Launcher _rope;
    readonly AttentionKernels.Launcher _attn;
    readonly KvCacheKernels.Launcher _kv;
    readonly SamplingKernels.Launcher _sample;
    readonly SamplingKernels.LauncherV2 _sampleV2;
    readonly Dictionary<int, SamplingKernels.LauncherV2> _sampleAt = new();
    readonly SwiGluKernels.Launcher _swiglu;
    readonly DropoutKernels.Launcher _drop;
    readonly CrossEntropyKernels.Launcher _ce;
    readonly NceKernels.Launcher _nce;
    readonly AdamWKernels.Launcher _adam;
    readonly NatKernels.Launcher _nat;
    readonly MemoryBuffer1D<float, Stride1D.Dense> _dummyF;
    readonly MemoryBuffer1D<ushort, Stride1D.Dense> _dummyH;
    readonly Dictionary<(int, float), MemoryBuffer1D<float, Stride1D.Dense>> _invFreq = new();
    readonly CuBlasLt? _lt;
    MemoryBuffer1D<byte, Stride1D.Dense>? _ltWorkspace;
    Tensor? _a16;                          // A cast to 16 bits for the tensor-core paths, grown as needed
    Tensor? _dsum;                         // attention backward's Σ dout·out per (b, h, t), grown as needed

    public IlgpuBackend(IlgpuDevice device = IlgpuDevice.Auto)
    {
        // ILGPU's CPU accelerator runs each simulated group thread as an OS thread and its barriers
        // as real synchronisation, so it gets small groups (4 warps of 4 threads); the kernels read
        // their group size at run time and work at both sizes. One simulated multiprocessor: with two,
        // a CI run once got an attention output row of zeros from the kernels (not reproducible in 300
        // repeats); ILGPU has had races in the CPU accelerator's multiprocessor and shared-memory
        // emulation (its PRs 747, 836), so groups run one at a time here. The tests also got faster.
        CudaDriver.InstallResolver();
        _ctx = Context.Create(b => KernelCatalog.Configure(b.CPU(new CPUDevice(4, 4, 1)).Cuda()));
        Accelerator? acc = null;
        if (device != IlgpuDevice.Cpu)
        {
            var cuda = _ctx.GetCudaDevices();
            if (cuda.Count > 0)
            {
                try { acc = cuda[0].CreateAccelerator(_ctx); }
                catch (Exception e) when (e is CudaException or NotSupportedException or InvalidOperationException)
                {
                    _ctx.Dispose();
                    throw new InvalidOperationException($"ILGPU found {cuda[0].Name} but could not create a CUDA accelerator on it: {e.Message} ({CudaDriver.Probe()}; driver API {cuda[0].DriverVersion})", e);
                }
            }
            else if (device == IlgpuDevice.Cuda)
            {
                _ctx.Dispose();
                throw new InvalidOperationException($"no CUDA device found: ILGPU saw none ({CudaDriver.Probe()}); use --device cpu");
            }
        }
        Accelerator = acc ?? _ctx.GetCPUDevice(0).CreateAccelerator(_ctx);
        _group = Math.Min(GroupReduce.MaxGroup, Accelerator.MaxNumThreadsPerGroup);
        if (_group < 16 || (_group & (_group - 1)) != 0)
            throw new InvalidOperationException($"accelerator {Accelerator.Name} allows {_group} threads per group; the kernels need a power of two ≥ 16");
        _mm = new(Accelerator, _group >= 256 ? 16 : 4);
        _ew = new(Accelerator, _group);
        _emb = new(Accelerator, _group);
        _rms = new(Accelerator, _group);
        _rope = new(Accelerator);
        _attn = new(Accelerator, _group);
        _kv = new(Accelerator, _group);
        _sample = new(Accelerator, _group);
        _sampleV2 = new(Accelerator, _group);
        _swiglu = new(Accelerator);
        _drop = new(Accelerator);
        _ce = new(Accelerator, _group);
        _nce = new(Accelerator, _group);
        _adam = new(Accelerator);
        _nat = new(Accelerator, _group);
        _dummyF = Accelerator.Allocate1D<float>(1);
        _dummyH = Accelerator.Allocate1D<ushort>(1);
        if (Accelerator is CudaAccelerator)
        {
            _lt = CuBlasLt.TryCreate(((CudaStream)Accelerator.DefaultStream).StreamPtr, bytes =>
            {
                _ltWorkspace = Accelerator.Allocate1D<byte>(bytes);
                return Addr((ArrayView<byte>)_ltWorkspace.View);
            }, out string why);
            LibraryStatus = _lt?.Description ?? why;
        }
        else LibraryStatus = "not on CUDA";
        MatMulVersion = Environment.GetEnvironmentVariable("NEGDISTILL_MATMUL")?.ToLowerInvariant() switch
        {
            null or "" or "auto" => MatMulKernels.Version.Auto,
            "v1" => MatMulKernels.Version.V1Simt, "v2" => MatMulKernels.Version.V2Mma, "library" or "cublaslt" => MatMulKernels.Version.Library,
            var v => throw new ArgumentException($"NEGDISTILL_MATMUL: '{v}' is not auto, v1, v2 or library"),
        };
    }

    /// <summary>Which matmul code runs (<see cref="MatMulKernels.Version"/>; $NEGDISTILL_MATMUL sets it at start,
    /// gpu-check sets it to check and time each). Auto: cuBLASLt where it loaded, else version 2 where its
    /// preconditions hold (16-bit B on CUDA), else version 1.</summary>
    public MatMulKernels.Version MatMulVersion { get; set; }
    /// <summary>Which group reduction the per-row kernels use (RMSNorm forward and dx, cross-entropy, NCE, NAT's
    /// integration unit, and the Σx, Σx², non-finite reductions):
    /// version 2 (warp shuffles) by default; gpu-check sets version 1 (shared-memory tree) to check and time it.</summary>
    public GroupReduce.Version RowReduceVersion { get; set; } = GroupReduce.Version.V2Warp;
    /// <summary>Which form the streaming elementwise kernels take (fill, axpy, scale, SwiGLU, AdamW, dropout; RMSNorm forward and
    /// dx, cross-entropy and NCE take version 3, float4 on top of the warp shuffles, with <see cref="RowReduceVersion"/> 2): version 2
    /// (four floats per thread, 128-bit loads) where <see cref="Wide.Fits"/> holds, by default; gpu-check sets
    /// version 1 (one float per thread) to check and time it.</summary>
    public Wide.Version StreamVersion { get; set; } = Wide.Version.V2Float4;
    /// <summary>cuBLASLt's description, or why it is not in use.</summary>
    public string LibraryStatus { get; }
    public bool HasLibrary => _lt != null;
    public bool HasTensorCoreKernel => _mm.HasTensorCores;

    /// <summary>The matmul code Auto resolves to for frozen 16-bit weights and for F32 × F32, in words.</summary>
    public string MatMulPath => !IsCuda ? "v1 SIMT fp32 tiles (ILGPU CPU accelerator: inline PTX skipped)"
        : _lt != null && MatMulVersion is MatMulKernels.Version.Auto or MatMulKernels.Version.Library ? $"library: {_lt.Description} (BF16/F16 × BF16/F16 → F32; F32 × F32 in TF32)"
        : MatMulVersion is MatMulKernels.Version.Auto or MatMulKernels.Version.V2Mma ? $"v2 mma.sync BF16/F16 tensor cores for 16-bit weights, v1 SIMT for F32 × F32 (cuBLASLt: {LibraryStatus})"
        : "v1 SIMT fp32 tiles";

    public string Name => Accelerator.AcceleratorType == AcceleratorType.Cuda ? $"ilgpu-cuda ({Accelerator.Name})" : "ilgpu-cpu";

    /// <summary>What ILGPU found: device, architecture, the PTX ISA it compiles for, driver API version,
    /// multiprocessors, memory. For gpu-check's first lines.</summary>
    public string Describe()
    {
        if (Accelerator is CudaAccelerator c)
            return $"{c.Name}: {c.Architecture}, PTX ISA {c.InstructionSet}, CUDA driver API {c.DriverVersion}, " +
                   $"{c.NumMultiprocessors} SMs at {c.ClockRate / 1000} MHz, {c.MemorySize / (double)(1L << 30):F1} GiB, L2 {c.L2CacheSize / (1 << 20)} MiB, " +
                   $"{c.MaxSharedMemoryPerGroup / 1024} KiB shared memory per group, ILGPU optimisation {KernelCatalog.Level}";
        return $"ILGPU CPU accelerator ({Accelerator.NumMultiprocessors} simulated multiprocessor, groups of {_group} threads); kernels run as .NET code, inline PTX skipped";
    }
    public bool IsCuda => Accelerator.AcceleratorType == AcceleratorType.Cuda;
    public DType DefaultKvCache => IsCuda ? DType.BF16 : DType.F32;

    static IlgpuTensor G(Tensor t) => t as IlgpuTensor ?? throw new ArgumentException($"tensor {t} does not belong to the ILGPU backend");
    static ArrayView<float> F(Tensor t) => t.DType == DType.F32 ? G(t).FV : throw new ArgumentException($"tensor {t} is {t.DType}, the op needs F32");
    static ArrayView<int> I(Tensor t) => t.DType == DType.I32 ? G(t).IV : throw new ArgumentException($"tensor {t} is {t.DType}, the op needs I32");
    static ArrayView<ushort> H(Tensor t) => t.DType is DType.F16 or DType.BF16 ? G(t).HV : throw new ArgumentException($"tensor {t} is {t.DType}, the op needs F16/BF16");

    public Tensor Alloc(string name, DType dtype, params int[] shape)
    {
        var t = new IlgpuTensor(Accelerator, name, dtype, shape, b => Interlocked.Add(ref _live, -b));
        long live = Interlocked.Add(ref _live, t.Bytes), peak;
        while (live > (peak = Interlocked.Read(ref _peak)) && Interlocked.CompareExchange(ref _peak, live, peak) != peak) { }
        return t;
    }

    /// <summary>Bytes of tensors allocated through <see cref="Alloc"/> and not yet disposed (the kernels'
    /// own small buffers excluded), and the most held at once since the last <see cref="ResetPeak"/>:
    /// what gpu-check sets beside the memory plan.</summary>
    public long LiveBytes => Interlocked.Read(ref _live);
    public long PeakBytes => Interlocked.Read(ref _peak);
    public void ResetPeak() => Interlocked.Exchange(ref _peak, Interlocked.Read(ref _live));
    long _live, _peak;
    public Tensor View(Tensor t, long offset, params int[] shape) => new IlgpuTensor(G(t), offset, shape);

    // ILGPU's CopyFromCPU/CopyToCPU(ref T, length) take "the base address of the pinned CPU buffer": it becomes a raw
    // pointer, so a managed array the GC moves during the copy is missed (seen: about 1 download in 500 of a fresh
    // array came back all zeros on the CPU accelerator; a second download of the same tensor was right). Pin first.
    static unsafe void ToHost<T>(ArrayView<T> v, Span<T> dst, int n) where T : unmanaged
    {
        if (n <= 0) return;
        fixed (T* p = dst) v.SubView(0, n).CopyToCPU(ref *p, n);
    }
    static unsafe void FromHost<T>(ArrayView<T> v, ReadOnlySpan<T> src) where T : unmanaged
    {
        if (src.IsEmpty) return;
        fixed (T* p = src) v.SubView(0, src.Length).CopyFromCPU(ref *p, src.Length);
    }

    public void Upload(Tensor t, ReadOnlySpan<float> src)
    {
        if (src.Length > t.Length) throw new ArgumentException($"upload of {src.Length} values into {t}");
        if (t.DType == DType.F32) { FromHost(F(t), src); return; }
        var tmp = new ushort[src.Length]; bool bf = t.DType == DType.BF16;
        for (int i = 0; i < src.Length; i++) tmp[i] = Checkpoints.HalfPrecision.Narrow(src[i], bf);
        UploadRaw16(t, tmp);
    }
    public void Upload(Tensor t, ReadOnlySpan<int> src) => FromHost(I(t), src);
    public void UploadRaw16(Tensor t, ReadOnlySpan<ushort> src) => FromHost(H(t), src);
    public void Download(Tensor t, Span<float> dst)
    {
        int n = (int)Math.Min(dst.Length, t.Length);
        if (t.DType == DType.F32) { ToHost(F(t), dst, n); return; }
        var tmp = new ushort[n]; DownloadRaw16(t, tmp); bool bf = t.DType == DType.BF16;
        for (int i = 0; i < n; i++) dst[i] = Checkpoints.HalfPrecision.Widen(tmp[i], bf);
    }
    public void Download(Tensor t, Span<int> dst)
    {
        int n = (int)Math.Min(dst.Length, t.Length);
        ToHost(I(t), dst, n);
    }
    public void DownloadRaw16(Tensor t, Span<ushort> dst)
    {
        int n = (int)Math.Min(dst.Length, t.Length);
        ToHost(H(t), dst, n);
    }
    public void Fill(Tensor t, float value)
    {
        switch (t.DType)
        {
            case DType.F32: _ew.Fill(F(t), value, t.Length, StreamVersion); break;
            case DType.I32 when value == 0f: I(t).MemSetToZero(); break;
            case DType.F16 or DType.BF16 when value == 0f: H(t).MemSetToZero(); break;
            default: throw new ArgumentException($"fill of {t} with {value}: only F32 takes non-zero fills");
        }
    }
    public void FillNormal(Tensor t, float std, ulong seed)
    {
        if (t.DType == DType.F32) _ew.FillNormal(F(t), std, seed);
        else _ew.FillNormal16(H(t), std, seed, t.DType == DType.BF16);
    }
    public void Copy(Tensor dst, Tensor src)
    {
        if (dst.DType != src.DType) throw new ArgumentException($"copy {src} → {dst}: storage kinds differ");
        long n = Math.Min(dst.Length, src.Length);
        switch (src.DType)
        {
            case DType.F32: F(src).SubView(0, n).CopyTo(F(dst).SubView(0, n)); break;
            case DType.I32: I(src).SubView(0, n).CopyTo(I(dst).SubView(0, n)); break;
            default: H(src).SubView(0, n).CopyTo(H(dst).SubView(0, n)); break;
        }
    }
    public void Synchronize() => Accelerator.Synchronize();

    public void Axpy(Tensor y, Tensor x, float a, long n) => _ew.Axpy(F(y), F(x), a, n, StreamVersion);
    public void Scale(Tensor y, float a, long n) => _ew.Scale(F(y), a, n, StreamVersion);
    public double SumSquares(Tensor x, long n) => _ew.Reduce(F(x), n, 0, RowReduceVersion);
    public double Sum(Tensor x, long n) => _ew.Reduce(F(x), n, 2, RowReduceVersion);
    public bool HasNonFinite(Tensor x, long n) => _ew.Reduce(F(x), n, 1, RowReduceVersion) > 0;

    public void MatMul(Tensor c, Tensor a, Tensor b, int m, int n, int k, bool transA, bool transB, float alpha = 1f, float beta = 0f)
    {
        a.Expect((long)m * k, "MatMul A"); b.Expect((long)n * k, "MatMul B"); c.Expect((long)m * n, "MatMul C");
        var d = new MatMulKernels.Dims
        {
            M = m, N = n, K = k, Lda = transA ? m : k, Ldb = transB ? k : n, Ldc = n, TransA = transA ? 1 : 0, TransB = transB ? 1 : 0,
            BKind = b.DType switch { DType.F32 => 0, DType.F16 => 1, DType.BF16 => 2, _ => throw new ArgumentException($"MatMul B {b}: unsupported dtype") },
            Alpha = alpha, Beta = beta,
        };
        var v = MatMulVersion;
        if (IsCuda && v != MatMulKernels.Version.V1Simt)
        {
            bool sixteen = b.DType is DType.F16 or DType.BF16;
            if (_lt != null && v is MatMulKernels.Version.Auto or MatMulKernels.Version.Library)
            {
                if (sixteen) _lt.Gemm(Addr(F(c)), Addr(A16(a, (long)m * k, b.DType)), Addr(H(b)), b.DType, d);
                else _lt.Gemm(Addr(F(c)), Addr(F(a)), Addr(F(b)), DType.F32, d);
                return;
            }
            if (sixteen && v is MatMulKernels.Version.Auto or MatMulKernels.Version.V2Mma)
            {
                var a16 = A16(a, (long)m * k, b.DType);
                ulong pa = Addr(a16), pb = Addr(H(b));
                if (MatMulKernels.Launcher.MmaFits(d, pa, pb)) { _mm.LaunchMma(F(c), pa, pb, d, b.DType == DType.F16); return; }
            }
            if (v == MatMulKernels.Version.Library) throw new InvalidOperationException($"matmul version 'library' was asked for but {LibraryStatus}");
        }
        else if (v is MatMulKernels.Version.V2Mma or MatMulKernels.Version.Library && !IsCuda)
            throw new NotSupportedException($"matmul version {v} needs a CUDA accelerator; the ILGPU CPU accelerator runs version 1 only (inline PTX is skipped there)");
        _mm.Launch(F(c), F(a), b.DType == DType.F32 ? F(b) : _dummyF.View, b.DType == DType.F32 ? _dummyH.View : H(b), d);
    }

    static ulong Addr<T>(ArrayView<T> v) where T : unmanaged => (ulong)v.LoadEffectiveAddressAsPtr().ToInt64();

    /// <summary>A (F32, n values) narrowed into the 16-bit scratch in the weights' kind: the tensor-core
    /// paths take both operands in 16 bits. The scratch grows to the largest A seen and is counted in
    /// <see cref="LiveBytes"/>.</summary>
    ArrayView<ushort> A16(Tensor a, long n, DType kind)
    {
        if (_a16 == null || _a16.Length < n) { _a16?.Dispose(); _a16 = Alloc("matmul.a16", DType.BF16, (int)n); }
        var view = H(_a16).SubView(0, n);
        _mm.Cast(F(a).SubView(0, n), view, n, kind == DType.BF16);
        return view;
    }

    public void EmbeddingForward(Tensor outp, Tensor tokens, Tensor wte, int n, int c) => _emb.Forward(F(outp), I(tokens), F(wte), n, c);
    public void EmbeddingBackward(Tensor dwte, Tensor tokens, Tensor dout, int n, int c) => _emb.Backward(F(dwte), I(tokens), F(dout), n, c);
    /// <summary>Embedding backward by version 1 (one thread per channel), for gpu-check's side-by-side check and timing.</summary>
    public void EmbeddingBackwardV1(Tensor dwte, Tensor tokens, Tensor dout, int n, int c) =>
        _emb.Backward(F(dwte), I(tokens), F(dout), n, c, EmbeddingKernels.Version.V1Columns);
    public void RmsNormForward(Tensor outp, Tensor rstd, Tensor x, Tensor w, int n, int c, float eps) => _rms.Forward(F(outp), F(rstd), F(x), F(w), n, c, eps, RowReduceVersion, StreamVersion);
    public void RmsNormBackward(Tensor dx, Tensor? dw, Tensor dout, Tensor x, Tensor w, Tensor rstd, int n, int c) =>
        _rms.Backward(F(dx), dw == null ? default : F(dw), F(dout), F(x), F(w), F(rstd), n, c, rv: RowReduceVersion, sv: StreamVersion);
    /// <summary>RMSNorm backward with dw by version 1 (one thread per column), for gpu-check's side-by-side check and timing.</summary>
    public void RmsNormBackwardV1(Tensor dx, Tensor dw, Tensor dout, Tensor x, Tensor w, Tensor rstd, int n, int c) =>
        _rms.Backward(F(dx), F(dw), F(dout), F(x), F(w), F(rstd), n, c, RmsNormKernels.DwVersion.V1Columns, RowReduceVersion, StreamVersion);

    public void Rope(Tensor x, Tensor pos, int n, int nHeads, int headDim, float theta, bool inverse)
    {
        if (!_invFreq.TryGetValue((headDim, theta), out var tab))
        {
            var host = new float[headDim / 2];
            for (int i = 0; i < host.Length; i++) host[i] = Ops.Rope.InvFreq(i, headDim, theta);
            tab = Accelerator.Allocate1D(host);
            _invFreq[(headDim, theta)] = tab;
        }
        _rope.Apply(F(x), I(pos), tab.View, n, nHeads, headDim, inverse);
    }

    public void AttentionForward(Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask, int b, int t, int nHeads, int headDim)
    {
        lse.Expect((long)b * nHeads * t, "AttentionForward lse");
        _attn.FlashForward(F(outp), F(lse), F(q), F(k), F(v), F(keyMask), b, t, nHeads, headDim);
    }
    public void AttentionBackward(Tensor dq, Tensor dk, Tensor dv, Tensor dout, Tensor outp, Tensor lse, Tensor q, Tensor k, Tensor v, Tensor keyMask,
        int b, int t, int nHeads, int headDim)
    {
        long rows = (long)b * nHeads * t;
        if (_dsum == null || _dsum.Length < rows) { _dsum?.Dispose(); _dsum = Alloc("attention.dsum", DType.F32, (int)rows); }
        _attn.FlashBackward(F(dq), F(dk), F(dv), F(_dsum), F(dout), F(outp), F(lse), F(q), F(k), F(v), F(keyMask), b, t, nHeads, headDim);
    }

    /// <summary>Attention kernels version 1 (per query row, the (B,H,T,T) probabilities in <paramref name="att"/>),
    /// kept beside version 2 so that gpu-check checks and times both; not used by the model.</summary>
    public void AttentionForwardV1(Tensor outp, Tensor att, Tensor q, Tensor k, Tensor v, Tensor keyMask, int b, int t, int nHeads, int headDim)
        => _attn.Forward(F(outp), F(att), F(q), F(k), F(v), F(keyMask), b, t, nHeads, headDim);
    /// <summary>Version 1's backward from the probabilities its forward left in <paramref name="att"/>;
    /// <paramref name="datt"/> (B,H,T,T) is scratch. Accumulates into dq, dk, dv.</summary>
    public void AttentionBackwardV1(Tensor dq, Tensor dk, Tensor dv, Tensor datt, Tensor dout, Tensor att, Tensor q, Tensor k, Tensor v, int b, int t, int nHeads, int headDim)
        => _attn.Backward(F(dq), F(dk), F(dv), F(datt), F(dout), F(att), F(q), F(k), F(v), b, t, nHeads, headDim);

    public void CacheWrite(Tensor kCache, Tensor vCache, Tensor k, Tensor v, Tensor rowMap, Tensor rowPos, int r, int c)
    {
        k.Expect((long)r * c, "CacheWrite k"); v.Expect((long)r * c, "CacheWrite v"); rowMap.Expect(3L * r, "CacheWrite rowMap");
        if (kCache.DType is DType.BF16 or DType.F16) _kv.Write16(H(kCache), H(vCache), F(k), F(v), I(rowMap), I(rowPos), r, c, kCache.DType == DType.BF16);
        else _kv.Write(F(kCache), F(vCache), F(k), F(v), I(rowMap), I(rowPos), r, c);
    }
    public void CachedAttention(Tensor outp, Tensor q, Tensor kCache, Tensor vCache, Tensor rowMap, Tensor rowPos, int r, int maxContext, int nHeads, int headDim)
    {
        outp.Expect((long)r * nHeads * headDim, "CachedAttention out"); q.Expect((long)r * nHeads * headDim, "CachedAttention q"); rowMap.Expect(3L * r, "CachedAttention rowMap");
        // a 16-bit cache takes version 2 (flash decoding), an F32 one version 1
        if (kCache.DType is DType.BF16 or DType.F16)
            _kv.Attention16(F(outp), F(q), H(kCache), H(vCache), I(rowMap), I(rowPos), r, maxContext, nHeads, headDim, kCache.DType == DType.BF16);
        else _kv.Attention(F(outp), F(q), F(kCache), F(vCache), I(rowMap), I(rowPos), r, maxContext, nHeads, headDim);
    }
    public void GatherRows(Tensor dst, Tensor src, Tensor rows, int r2, int c)
    {
        dst.Expect((long)r2 * c, "GatherRows dst");
        _kv.Gather(F(dst), F(src), I(rows), r2, c);
    }
    public void SampleRows(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP)
    {
        logits.Expect((long)r * v, "SampleRows logits"); rowSeed.Expect(2L * r, "SampleRows rowSeed");
        _sampleV2.Sample(F(logits), I(tokens), F(logProbs), I(rowSeed), I(rowCounter), r, v, temperature, topK, topP);
    }
    /// <summary>Sampling version 1 (contiguous blocks, bisection; twin: CpuBackend.SampleRowsV1), kept for gpu-check.</summary>
    public void SampleRowsV1(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP)
    {
        logits.Expect((long)r * v, "SampleRows logits"); rowSeed.Expect(2L * r, "SampleRows rowSeed");
        _sample.Sample(F(logits), I(tokens), F(logProbs), I(rowSeed), I(rowCounter), r, v, temperature, topK, topP);
    }
    /// <summary>Version 2 at another group size (0: the backend's), with top-p's candidate nudged by
    /// <paramref name="nudge"/> bits and greedy rows split over <paramref name="split"/> groups (−1: as
    /// <see cref="SampleRows"/> chooses); tests and gpu-check: the result must not depend on any of them.</summary>
    public void SampleRowsV2(Tensor logits, Tensor tokens, Tensor logProbs, Tensor rowSeed, Tensor rowCounter, int r, int v, float temperature, int topK, float topP,
        int group, int nudge, int split = -1)
    {
        logits.Expect((long)r * v, "SampleRows logits"); rowSeed.Expect(2L * r, "SampleRows rowSeed");
        if (group <= 0) group = _group;
        if (!_sampleAt.TryGetValue(group, out var l)) _sampleAt[group] = l = new(Accelerator, group);
        l.Sample(F(logits), I(tokens), F(logProbs), I(rowSeed), I(rowCounter), r, v, temperature, topK, topP, nudge, split);
    }

    public void SwiGluForward(Tensor h, Tensor gate, Tensor up, long n) => _swiglu.Forward(F(h), F(gate), F(up), n, StreamVersion);
    public void SwiGluBackward(Tensor dgate, Tensor dup, Tensor dh, Tensor gate, Tensor up, long n) => _swiglu.Backward(F(dgate), F(dup), F(dh), F(gate), F(up), n, StreamVersion);
    public void DropoutForward(Tensor y, Tensor x, float p, ulong seed, long n) => _drop.Forward(F(y), F(x), p, seed, n, StreamVersion);
    public void DropoutBackward(Tensor dx, Tensor dy, float p, ulong seed, long n) => _drop.Backward(F(dx), F(dy), p, seed, n, StreamVersion);
    public void CrossEntropyFused(Tensor logits, Tensor losses, Tensor targets, int n, int v, double weight, bool computeGrad)
        => _ce.Fused(F(logits), F(losses), I(targets), n, v, (float)weight, computeGrad, RowReduceVersion, StreamVersion);
    public void NceKl(Tensor zNat, Tensor zNeg, Tensor kl, int n, int v, float temperature)
        => _nce.Kl(F(zNat), F(zNeg), F(kl), n, v, temperature, RowReduceVersion, StreamVersion);
    public void NceDistillFused(Tensor zs, Tensor zNat, Tensor targets, Tensor rowWeight, Tensor lossCe, Tensor lossKd, int n, int v,
        float temperature, float a, double ceScale, double kdScale, bool computeGrad)
        => _nce.Distill(F(zs), F(zNat), I(targets), F(rowWeight), F(lossCe), F(lossKd), n, v, temperature, a, (float)ceScale, (float)kdScale, computeGrad, RowReduceVersion, StreamVersion);
    public void AdamW(Tensor param, Tensor grad, Tensor m, Tensor v, long n, float lr, float beta1, float beta2, float eps, float weightDecay, int t)
        => _adam.Step(F(param), F(grad), F(m), F(v), n, lr, beta1, beta2, eps, weightDecay, t, StreamVersion);
    public void IntegrationForward(Tensor mix, Tensor aNeg, Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, int n, int d, float beta, float invTemp)
    {
        foreach (var t in new[] { mix, q, kPos, kNeg, uPos, uNeg }) t.Expect((long)n * d, "IntegrationForward");
        aNeg.Expect(n, "IntegrationForward aNeg");
        _nat.Forward(F(mix), F(aNeg), F(q), F(kPos), F(kNeg), F(uPos), F(uNeg), n, d, beta, invTemp, RowReduceVersion);
    }
    public void IntegrationBackward(Tensor dq, Tensor dkPos, Tensor dkNeg, Tensor duPos, Tensor duNeg, Tensor dmix,
        Tensor q, Tensor kPos, Tensor kNeg, Tensor uPos, Tensor uNeg, Tensor aNeg, int n, int d, float beta, float invTemp)
    {
        foreach (var t in new[] { dq, dkPos, dkNeg, duPos, duNeg, dmix, q, kPos, kNeg, uPos, uNeg }) t.Expect((long)n * d, "IntegrationBackward");
        aNeg.Expect(n, "IntegrationBackward aNeg");
        _nat.Backward(F(dq), F(dkPos), F(dkNeg), F(duPos), F(duNeg), F(dmix), F(q), F(kPos), F(kNeg), F(uPos), F(uNeg), F(aNeg), n, d, beta, invTemp, RowReduceVersion);
    }

    public void Dispose()
    {
        _lt?.Dispose();
        _ltWorkspace?.Dispose();
        _a16?.Dispose();
        _dsum?.Dispose();
        foreach (var b in _invFreq.Values) b.Dispose();
        _dummyF.Dispose(); _dummyH.Dispose();
        Accelerator.Dispose();
        _ctx.Dispose();
    }
}
