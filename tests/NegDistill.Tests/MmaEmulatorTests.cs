using NegDistill.Checkpoints;
using NegDistill.Kernels;
using NegDistill.Runtime;

namespace NegDistill.Tests;

/// <summary>
/// MatMulKernels version 2 checked without a GPU. A warp emulator written from the PTX ISA's text for
/// <c>mma.m16n8k16</c> (.bf16/.f16, f32 accumulators) and <c>ldmatrix .m8n8.x4 [.trans]</c> stands in for the
/// tensor cores; against it: (1) <see cref="MmaFragments"/>' index functions describe the same layout,
/// (2) the shared-memory row addresses the kernel hands ldmatrix give every lane the fragment the mma needs,
/// for both storage orders of A and B, and (3) the kernel's whole tiling (<see cref="MmaTiling"/>: staging
/// chunks with zero-fill at the edges, two stages, warp tiles, the epilogue's rows and columns, alpha and
/// beta) run block by block on the emulator equals a plain GEMM on the same 16-bit inputs.
/// On ILGPU's CPU accelerator the kernel itself is not run (inline PTX is skipped there; version 1 serves);
/// PtxasTests checks its SASS for HMMA, LDSM and LDGSTS and no local memory.
/// </summary>
[TestFixture]
public class MmaEmulatorTests
{
    // ------------------------------------------------------------------ the emulator (PTX ISA text)
    // "Matrix fragments for mma.m16n8k16 with floating point type": lane = 4·groupID + threadID_in_group;
    // A holds a0..a7 (two per 32-bit register, a_i in register i/2, lower index in the low half):
    //   row = groupID for a_i with i < 2 or 4 ≤ i < 6, groupID + 8 otherwise;
    //   col = threadID_in_group·2 + (i & 1) for i < 4, + 8 for i ≥ 4.
    // B holds b0..b3: row = threadID_in_group·2 + (i & 1) for i < 2, + 8 for i ≥ 2; col = groupID.
    // C/D hold c0..c3: row = groupID for i < 2, groupID + 8 for i ≥ 2; col = threadID_in_group·2 + (i & 1).
    static (int Row, int Col) AElem(int lane, int i) =>
        ((i < 2 || (i >= 4 && i < 6)) ? lane / 4 : lane / 4 + 8, (lane % 4) * 2 + (i & 1) + (i >= 4 ? 8 : 0));
    static (int Row, int Col) BElem(int lane, int i) => ((lane % 4) * 2 + (i & 1) + (i >= 2 ? 8 : 0), lane / 4);
    static (int Row, int Col) CElem(int lane, int i) => (i < 2 ? lane / 4 : lane / 4 + 8, (lane % 4) * 2 + (i & 1));

    static float Lo(uint r, bool f16) => Widen((ushort)(r & 0xFFFF), f16);
    static float Hi(uint r, bool f16) => Widen((ushort)(r >> 16), f16);
    static float Widen(ushort w, bool f16) => HalfPrecision.Widen(w, !f16);

    /// <summary>D = A·B + C for one warp: rebuilds A (16×16) and B (16×8) from the lanes' registers as the ISA
    /// lays them out, multiplies in fp32 like the tensor core's accumulator, and hands D back by the C layout.</summary>
    static float[][] EmulateMma(uint[][] a, uint[][] b, float[][] c, bool f16)
    {
        var A = new float[16, 16]; var B = new float[16, 8];
        for (int lane = 0; lane < 32; lane++)
        {
            for (int i = 0; i < 8; i++) { var (r, q) = AElem(lane, i); A[r, q] = (i & 1) == 0 ? Lo(a[lane][i / 2], f16) : Hi(a[lane][i / 2], f16); }
            for (int i = 0; i < 4; i++) { var (r, q) = BElem(lane, i); B[r, q] = (i & 1) == 0 ? Lo(b[lane][i / 2], f16) : Hi(b[lane][i / 2], f16); }
        }
        var d = new float[32][];
        for (int lane = 0; lane < 32; lane++)
        {
            d[lane] = new float[4];
            for (int i = 0; i < 4; i++)
            {
                var (r, q) = CElem(lane, i);
                float s = c[lane][i];
                for (int k = 0; k < 16; k++) s += A[r, k] * B[k, q];
                d[lane][i] = s;
            }
        }
        return d;
    }

    /// <summary>ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: "each address is the start of a row of 8
    /// 16-bit elements"; lanes 8i..8i+7 address the rows of matrix i, which lands in destination register i.
    /// Without .trans "each thread receives a fragment of a row": thread 4r + q holds row r, elements 2q and
    /// 2q + 1; with .trans the matrix is delivered as its transpose, i.e. the same rule on Mᵀ.</summary>
    static uint[][] EmulateLdsm(ushort[] smem, int[] laneAddress, bool trans)
    {
        var regs = new uint[32][];
        for (int t = 0; t < 32; t++) regs[t] = new uint[4];
        for (int m = 0; m < 4; m++)
        {
            var M = new ushort[8, 8];
            for (int row = 0; row < 8; row++)
                for (int e = 0; e < 8; e++) M[row, e] = smem[laneAddress[8 * m + row] + e];
            if (trans) { var T = new ushort[8, 8]; for (int x = 0; x < 8; x++) for (int y = 0; y < 8; y++) T[x, y] = M[y, x]; M = T; }
            for (int t = 0; t < 32; t++) regs[t][m] = M[t / 4, 2 * (t % 4)] | ((uint)M[t / 4, 2 * (t % 4) + 1] << 16);
        }
        return regs;
    }

    // ------------------------------------------------------------------ (1) fragment layouts
    [Test]
    public void FragmentFunctions_DescribeTheIsaLayout()
    {
        for (int lane = 0; lane < 32; lane++)
        {
            for (int i = 0; i < 8; i++)
                Assert.That((MmaFragments.ARow(lane, i / 2), MmaFragments.ACol(lane, i / 2, i & 1)), Is.EqualTo(AElem(lane, i)), $"A lane {lane} a{i}");
            for (int i = 0; i < 4; i++)
                Assert.That((MmaFragments.BRow(lane, i / 2, i & 1), MmaFragments.BCol(lane)), Is.EqualTo(BElem(lane, i)), $"B lane {lane} b{i}");
            for (int i = 0; i < 4; i++)
                Assert.That((MmaFragments.CRow(lane, i), MmaFragments.CCol(lane, i)), Is.EqualTo(CElem(lane, i)), $"C lane {lane} c{i}");
        }
        // each layout covers its matrix exactly once
        Assert.That(Enumerable.Range(0, 32).SelectMany(l => Enumerable.Range(0, 8).Select(i => AElem(l, i))).Distinct().Count(), Is.EqualTo(256));
        Assert.That(Enumerable.Range(0, 32).SelectMany(l => Enumerable.Range(0, 4).Select(i => BElem(l, i))).Distinct().Count(), Is.EqualTo(128));
        Assert.That(Enumerable.Range(0, 32).SelectMany(l => Enumerable.Range(0, 4).Select(i => CElem(l, i))).Distinct().Count(), Is.EqualTo(128));
    }

    // ------------------------------------------------------------------ (2) ldmatrix addressing
    [Test]
    public void LdmatrixAddresses_GiveEveryLaneItsFragment([Values] bool kMajor)
    {
        // a 64 × 48 region of "shared memory" holding distinct values; fragments of the 16×16 A block at
        // (m0, k0) and of the two 16×8 B blocks at (n0, k0), (n0 + 8, k0)
        const int m0 = 16, n0 = 24, k0 = 16;
        int stride = kMajor ? 40 : 72;
        var smem = new ushort[64 * 72];
        for (int i = 0; i < smem.Length; i++) smem[i] = (ushort)(i * 7 + 3);
        ushort At(int outer, int k) => kMajor ? smem[outer * stride + k] : smem[k * stride + outer];   // element (outer, k) as stored

        var aRegs = EmulateLdsm(smem, Enumerable.Range(0, 32).Select(l => MmaFragments.LdsmA(l, kMajor, stride, m0, k0)).ToArray(), trans: !kMajor);
        var bRegs = EmulateLdsm(smem, Enumerable.Range(0, 32).Select(l => MmaFragments.LdsmB(l, kMajor, stride, n0, k0)).ToArray(), trans: !kMajor);
        for (int lane = 0; lane < 32; lane++)
        {
            for (int i = 0; i < 8; i++)
            {
                var (r, q) = AElem(lane, i);
                uint reg = aRegs[lane][i / 2];
                Assert.That((i & 1) == 0 ? reg & 0xFFFF : reg >> 16, Is.EqualTo(At(m0 + r, k0 + q)), $"A lane {lane} a{i}");
            }
            for (int tile = 0; tile < 2; tile++)
                for (int i = 0; i < 4; i++)
                {
                    var (k, n) = BElem(lane, i);
                    uint reg = bRegs[lane][2 * tile + i / 2];
                    Assert.That((i & 1) == 0 ? reg & 0xFFFF : reg >> 16, Is.EqualTo(At(n0 + 8 * tile + n, k0 + k)), $"B tile {tile} lane {lane} b{i}");
                }
        }
    }

    // ------------------------------------------------------------------ the kernel's own register use
    /// <summary>What the compiled kernel's PTX does with its named registers (tools/gen-mma-ptx.py): for each
    /// ldmatrix of the A and B loads (in operand order) its destination registers, for each mma its
    /// accumulator, A and B registers, and the accumulator each epilogue store reads, in program order.</summary>
    sealed record KernelRegs(int[][] LoadA, int[][] LoadB, (int C, int A, int B0, int B1)[] Mma, int[] Stores);

    static readonly Lazy<KernelRegs> Regs = new(() =>
    {
        string ptx = KernelCatalog.CompilePtx(KernelCatalog.Find("MatMulKernels.MmaKernel"), ILGPU.Runtime.Cuda.CudaArchitecture.SM_80);
        int[] Dest(string line) => System.Text.RegularExpressions.Regex.Matches(line[..line.IndexOf('}')], @"nd_[ab](\d+)").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        // the first (non-.trans) A and B load strings; each holds 4 (A) or 2 (B) ldmatrix in operand order
        string Block(string dest) => ptx.Split('\n').First(l => l.Contains("ldmatrix") && !l.Contains(".trans") && l.Contains(dest));
        int[][] Ldsm(string block) => block.Split("ldmatrix").Skip(1).Select(Dest).ToArray();
        var mma = System.Text.RegularExpressions.Regex.Matches(ptx.Split('\n').First(l => l.Contains("mma.sync") && l.Contains(".bf16")),
                @"\{nd_c(\d+), [^}]*\}, \{nd_a(\d+), [^}]*\}, \{nd_b(\d+), nd_b(\d+)\}")
            .Select(m => (int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value), int.Parse(m.Groups[3].Value), int.Parse(m.Groups[4].Value))).ToArray();
        var stores = System.Text.RegularExpressions.Regex.Matches(ptx, @"mul\.f32 t0, nd_c(\d+),").Select(m => int.Parse(m.Groups[1].Value)).ToArray();
        return new KernelRegs(Ldsm(Block("nd_a0")), Ldsm(Block("nd_b0")), mma, stores);
    });

    [Test]
    public void KernelPtx_UsesItsRegistersConsistently()
    {
        var r = Regs.Value;
        Assert.That(r.LoadA.Length, Is.EqualTo(4)); Assert.That(r.LoadB.Length, Is.EqualTo(2));
        Assert.That(r.Mma.Length, Is.EqualTo(16), "16 mma per k16 step");
        Assert.That(r.Mma.Select(m => m.C).Distinct().Count(), Is.EqualTo(16), "each mma its own accumulators");
        Assert.That(r.Stores, Is.EqualTo(Enumerable.Range(0, 32).Select(i => 4 * (i / 2) + 2 * (i % 2))), "epilogue: tiles 00Lo, 00Hi, 01Lo, … in the kernel's call order");
    }

    // ------------------------------------------------------------------ (3) the kernel's tiling, emulated
    /// <summary>Runs version 2's algorithm for every block: cp.async chunks (MmaTiling) into two stages,
    /// per warp and k16 step the kernel's ldmatrix addresses into the registers its PTX names, its 16 mma
    /// strings as compiled, then the epilogue's rows, columns, alpha and beta (tile (mt, nt) reads
    /// accumulators 4(4mt + nt) … + 3, as <see cref="KernelPtx_UsesItsRegistersConsistently"/> checks).</summary>
    static void EmulateKernel(ushort[] a16, ushort[] b16, float[] c, MatMulKernels.Dims d, bool f16)
    {
        var regs = Regs.Value;
        bool aK = d.TransA == 0, bK = d.TransB != 0;
        int sa = MmaTiling.Stride(aK, MmaTiling.BM), sb = MmaTiling.Stride(bK, MmaTiling.BN);
        int aElems = MmaTiling.TileElements(aK, MmaTiling.BM), stageElems = aElems + MmaTiling.TileElements(bK, MmaTiling.BN);
        Assert.That(2 * MmaTiling.Stages * stageElems + 16, Is.EqualTo(MmaTiling.SharedBytes(aK, bK)));
        Assert.That(MmaTiling.SharedBytes(aK, bK), Is.LessThanOrEqualTo(48 * 1024), "ILGPU's dynamic shared memory stays within 48 KB");
        int tiles = (d.K + MmaTiling.BK - 1) / MmaTiling.BK;
        for (int by = 0; by * MmaTiling.BM < d.M; by++)
            for (int bx = 0; bx * MmaTiling.BN < d.N; bx++)
            {
                int m0 = by * MmaTiling.BM, n0 = bx * MmaTiling.BN;
                var smem = new ushort[MmaTiling.Stages * stageElems];
                var acc = new float[8][][];
                for (int w = 0; w < 8; w++) { acc[w] = new float[32][]; for (int l = 0; l < 32; l++) acc[w][l] = new float[64]; }
                for (int t = 0; t < tiles; t++)
                {
                    int st = (t & 1) * stageElems, k0 = t * MmaTiling.BK;
                    for (int tid = 0; tid < MmaTiling.Threads; tid++)
                        for (int i = 0; i < MmaTiling.ChunksPerTile / MmaTiling.Threads; i++)
                        {
                            int ch = tid + i * MmaTiling.Threads;
                            Copy(a16, smem, st + MmaTiling.ChunkSmem(aK, MmaTiling.BM, ch), MmaTiling.ChunkInside(aK, m0, k0, ch, d.M, d.K), MmaTiling.ChunkGlobal(aK, m0, k0, ch, d.Lda));
                            Copy(b16, smem, st + aElems + MmaTiling.ChunkSmem(bK, MmaTiling.BN, ch), MmaTiling.ChunkInside(bK, n0, k0, ch, d.N, d.K), MmaTiling.ChunkGlobal(bK, n0, k0, ch, d.Ldb));
                        }
                    for (int w = 0; w < 8; w++)
                    {
                        int wr = MmaTiling.WarpRow(w), wc = MmaTiling.WarpCol(w);
                        for (int kk = 0; kk < MmaTiling.BK; kk += 16)
                        {
                            // the kernel's ldmatrix: operand mt (A) / p (B) is the address of m tile mt / n tiles 2p, 2p+1
                            var ndA = new uint[32][]; var ndB = new uint[32][];
                            for (int l = 0; l < 32; l++) { ndA[l] = new uint[16]; ndB[l] = new uint[8]; }
                            for (int mt = 0; mt < 4; mt++)
                            {
                                var got = EmulateLdsm(smem, Enumerable.Range(0, 32).Select(l => st + MmaFragments.LdsmA(l, aK, sa, wr + 16 * mt, kk)).ToArray(), !aK);
                                for (int l = 0; l < 32; l++) for (int q = 0; q < 4; q++) ndA[l][regs.LoadA[mt][q]] = got[l][q];
                            }
                            for (int p = 0; p < 2; p++)
                            {
                                var got = EmulateLdsm(smem, Enumerable.Range(0, 32).Select(l => st + aElems + MmaFragments.LdsmB(l, bK, sb, wc + 16 * p, kk)).ToArray(), !bK);
                                for (int l = 0; l < 32; l++) for (int q = 0; q < 4; q++) ndB[l][regs.LoadB[p][q]] = got[l][q];
                            }
                            // the kernel's 16 mma strings, as compiled
                            foreach (var (cr, ar, b0, b1) in regs.Mma)
                            {
                                var dOut = EmulateMma(ndA.Select(x => x[ar..(ar + 4)]).ToArray(), ndB.Select(x => new[] { x[b0], x[b1] }).ToArray(),
                                    acc[w].Select(x => x[cr..(cr + 4)]).ToArray(), f16);
                                for (int l = 0; l < 32; l++) Array.Copy(dOut[l], 0, acc[w][l], cr, 4);
                            }
                        }
                    }
                }
                for (int w = 0; w < 8; w++)
                    for (int l = 0; l < 32; l++)
                        for (int mt = 0; mt < 4; mt++)
                            for (int nt = 0; nt < 4; nt++)
                                for (int e = 0; e < 4; e++)
                                {
                                    int r = m0 + MmaTiling.WarpRow(w) + 16 * mt + MmaFragments.CRow(l, e), q = n0 + MmaTiling.WarpCol(w) + 8 * nt + MmaFragments.CCol(l, e);
                                    if (r >= d.M || q >= d.N) continue;
                                    long idx = (long)r * d.Ldc + q;
                                    float v = d.Alpha * acc[w][l][4 * (4 * mt + nt) + e];
                                    c[idx] = d.Beta == 0f ? v : v + d.Beta * c[idx];
                                }
            }
    }

    static void Copy(ushort[] src, ushort[] smem, int dst, bool inside, long global)
    {
        for (int e = 0; e < 8; e++) smem[dst + e] = inside ? src[global + e] : (ushort)0;
    }

    static MatMulKernels.Dims Dims(int m, int n, int k, bool ta, bool tb, float alpha, float beta) => new()
    {
        M = m, N = n, K = k, Lda = ta ? m : k, Ldb = tb ? k : n, Ldc = n, TransA = ta ? 1 : 0, TransB = tb ? 1 : 0, BKind = 2, Alpha = alpha, Beta = beta,
    };

    [Test]
    public void KernelTiling_OnTheEmulator_EqualsAPlainGemm([Values] bool transA, [Values] bool transB, [Values(0f, 0.5f)] float beta, [Values] bool f16)
    {
        // edges in every direction: M and N not multiples of 128, K not a multiple of 32 (only of 8)
        foreach (var (m, n, k) in new[] { (200, 136, 72), (8, 8, 8), (128, 256, 64) })
        {
            var d = Dims(m, n, k, transA, transB, 1.5f, beta);
            var a = TestUtil.Rand(m * k, 11).Select(v => HalfPrecision.Narrow(v, !f16)).ToArray();
            var b = TestUtil.Rand(n * k, 12).Select(v => HalfPrecision.Narrow(v, !f16)).ToArray();
            var c0 = TestUtil.Rand(m * n, 13);
            var got = (float[])c0.Clone();
            EmulateKernel(a, b, got, d, f16);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int p = 0; p < k; p++)
                        s += (double)Widen(a[transA ? (long)p * m + i : (long)i * k + p], f16) * Widen(b[transB ? (long)j * k + p : (long)p * n + j], f16);
                    double want = 1.5 * s + beta * c0[i * n + j];
                    // fp32 accumulation over K ≤ 72 products of O(1) values: ~1e-6 relative
                    Assert.That(got[i * n + j], Is.EqualTo(want).Within(1e-5 * (1 + Math.Abs(want))), $"C[{i},{j}] of {m}×{n}×{k}");
                }
        }
    }

    [Test]
    public void Preconditions_AreWhatTheChunksNeed()
    {
        // k-major operands need K % 8 == 0, outer-major ones their outer size % 8 == 0; addresses 16-byte aligned
        Assert.That(MatMulKernels.Launcher.MmaFits(Dims(4096, 4096, 4096, false, true, 1, 0), 256, 512), Is.True);
        Assert.That(MatMulKernels.Launcher.MmaFits(Dims(4096, 11008, 4096, false, false, 1, 0), 256, 512), Is.True);
        Assert.That(MatMulKernels.Launcher.MmaFits(Dims(17, 33, 65, false, true, 1, 0), 256, 512), Is.False, "K = 65");
        Assert.That(MatMulKernels.Launcher.MmaFits(Dims(16, 33, 64, false, false, 1, 0), 256, 512), Is.False, "N = 33 with B stored [k][n]");
        Assert.That(MatMulKernels.Launcher.MmaFits(Dims(33, 16, 64, true, true, 1, 0), 256, 512), Is.False, "M = 33 with A stored [k][m]");
        Assert.That(MatMulKernels.Launcher.MmaFits(Dims(64, 64, 64, false, true, 1, 0), 256 + 8, 512), Is.False, "A not 16-byte aligned");
    }
}
