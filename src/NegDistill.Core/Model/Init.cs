using NegDistill.Runtime;

namespace NegDistill.Model;

/// <summary>Seeded initialisers drawn from <see cref="CounterRng"/>, so a parameter's values depend
/// only on (seed, parameter index, element index).</summary>
public static class Init
{
    /// <summary>Normal(0, std) by Box–Muller on two counter-based uniforms.</summary>
    public static float[] Normal(long n, float std, ulong seed)
    {
        var r = new float[n];
        for (long i = 0; i < n; i++) r[i] = NormalAt(std, seed, i);
        return r;
    }

    /// <summary>Element <paramref name="i"/> of <see cref="Normal"/>: a pure function of (seed, i), so the
    /// CPU twin's and the kernels' <c>FillNormal</c> draw the same values as the host.</summary>
    public static float NormalAt(float std, ulong seed, long i)
    {
        double u1 = (CounterRng.Hash(seed, 2 * (ulong)i) >> 11) * (1.0 / (1UL << 53));
        double u2 = (CounterRng.Hash(seed, 2 * (ulong)i + 1) >> 11) * (1.0 / (1UL << 53));
        return (float)(std * Math.Sqrt(-2.0 * Math.Log(1.0 - u1)) * Math.Cos(2 * Math.PI * u2));
    }

    /// <summary>The same draw as <see cref="NormalAt"/> in fp32 arithmetic on 24-bit uniforms, for kernels:
    /// ILGPU's fp64 log/cos are CORDIC loops through local memory, its fp32 ones single PTX instructions.
    /// Within ~1e-6 relative of <see cref="NormalAt"/> on the GPU's approximate log/cos, not bit-equal.</summary>
    public static float NormalAt32(float std, ulong seed, long i)
    {
        float u1 = (CounterRng.Hash(seed, 2 * (ulong)i) >> 40) * (1.0f / 16777216.0f);
        float u2 = (CounterRng.Hash(seed, 2 * (ulong)i + 1) >> 40) * (1.0f / 16777216.0f);
        return std * MathF.Sqrt(-2f * MathF.Log(1f - u1)) * MathF.Cos(2f * MathF.PI * u2);
    }

    /// <summary>Kaiming-uniform with a = √5, as torch.nn.Linear and PEFT's lora_A use:
    /// bound = gain·√(3/fan_in) with gain = √(2/(1+a²)), i.e. bound = 1/√fan_in.</summary>
    public static float[] KaimingUniform(long n, int fanIn, ulong seed)
    {
        var r = new float[n];
        float bound = 1f / MathF.Sqrt(fanIn);
        for (long i = 0; i < n; i++) r[i] = (2f * CounterRng.Uniform(seed, (ulong)i) - 1f) * bound;
        return r;
    }
}
