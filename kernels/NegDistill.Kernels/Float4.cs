using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>Four consecutive floats, 16 bytes: a kernel that reads an ArrayView&lt;Float4&gt; (a float view's
/// <c>Cast&lt;Float4&gt;()</c>) gets one 128-bit load per element (LDG.E.128 / STG.E.128 in the SASS) instead of four.</summary>
[StructLayout(LayoutKind.Sequential, Size = 16)]
public struct Float4(float x, float y, float z, float w)
{
    public float X = x, Y = y, Z = z, W = w;
}

/// <summary>Versions of the streaming elementwise kernels (SwiGLU, AdamW, axpy, scale): version 1 one float per
/// thread, version 2 one <see cref="Float4"/> per thread where <see cref="Fits"/> holds, else version 1.</summary>
public static class Wide
{
    public enum Version { V1Scalar = 1, V2Float4 = 2 }

    /// <summary>True when n is a multiple of 4 and every view starts on a 16-byte boundary (a 128-bit access
    /// must be aligned; a sub-view at an odd float offset is not) and holds at least n floats.</summary>
    public static bool Fits(long n, params ArrayView<float>[] views)
    {
        if (n <= 0 || (n & 3) != 0) return false;
        foreach (var v in views)
            if (v.Length < n || (v.LoadEffectiveAddressAsPtr().ToInt64() & 15) != 0) return false;
        return true;
    }

    /// <summary>The first n floats of <paramref name="v"/> as n/4 <see cref="Float4"/>s (call after <see cref="Fits"/>).</summary>
    public static ArrayView<Float4> As4(ArrayView<float> v, long n) => v.SubView(0, n).Cast<Float4>();
}
