#!/usr/bin/env python3
# Regenerates src/NegDistill.Core/Runtime/ProfilingBackend.cs from IBackend.cs: one timed forwarding line per op.
import os, re
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
src=open(os.path.join(root, 'src/NegDistill.Core/Runtime/IBackend.cs')).read()
body=src[src.index('public interface IBackend'):]
sigs=re.findall(r'^\s+([A-Za-z<>\[\]]+)\s+(\w+)\(([^;{]*?)\);', body, re.M|re.S)
out=[]
passthrough={'Alloc','View','Upload','UploadRaw16','Download','DownloadRaw16'}
for ret,name,params in sigs:
    params=' '.join(params.split())
    names=[]
    for p in [x.strip() for x in re.split(r',(?![^<]*>)', params) if x.strip()]:
        p=p.split('=')[0].strip()
        names.append(p.split()[-1])
    call=f"_inner.{name}({', '.join(names)})"
    if name in passthrough: out.append(f"    public {ret} {name}({params}) => {call};")
    elif ret=='void': out.append(f"    public {ret} {name}({params}) {{ long t0__ = Start(); {call}; Stop(\"{name}\", t0__); }}")
    else: out.append(f"    public {ret} {name}({params}) {{ long t0__ = Start(); var r__ = {call}; Stop(\"{name}\", t0__); return r__; }}")
code='''using System.Diagnostics;

namespace NegDistill.Runtime;

/// <summary>
/// Wraps a backend and times every op (synchronising the device after each, so GPU times are real),
/// for the per-op share of a training or decoding step. Memory transfers pass through untimed.
/// The members are one line each, generated from <see cref="IBackend"/> by tools/gen-profiling-backend.py.
/// </summary>
public sealed class ProfilingBackend(IBackend inner) : IBackend
{
    readonly IBackend _inner = inner;
    readonly Dictionary<string, (long Ticks, long Calls)> _stats = new();

    public IBackend Inner => _inner;
    public string Name => _inner.Name + "+profile";

    /// <summary>(op, seconds, calls), most expensive first.</summary>
    public IReadOnlyList<(string Op, double Seconds, long Calls)> Report() =>
        _stats.Select(kv => (kv.Key, kv.Value.Ticks / (double)Stopwatch.Frequency, kv.Value.Calls)).OrderByDescending(x => x.Item2).ToList();

    public void Reset() => _stats.Clear();

    /// <summary>Off: every op passes through untimed (a model can live on the profiler and be timed for
    /// one run only).</summary>
    public bool Enabled { get; set; } = true;

    long Start() => Enabled ? Stopwatch.GetTimestamp() : 0;

    void Stop(string op, long t0)
    {
        if (!Enabled) return;
        _inner.Synchronize();
        long dt = Stopwatch.GetTimestamp() - t0;
        _stats[op] = _stats.TryGetValue(op, out var s) ? (s.Ticks + dt, s.Calls + 1) : (dt, 1);
    }

'''+'\n'.join(out)+'''

    public void Dispose() => _inner.Dispose();
}
'''
code=code.replace('    public void Synchronize() { long t = Start(); _inner.Synchronize(); Stop("Synchronize", t); }','    public void Synchronize() => _inner.Synchronize();')
open(os.path.join(root, 'src/NegDistill.Core/Runtime/ProfilingBackend.cs'),'w').write(code)
print(len(out))
