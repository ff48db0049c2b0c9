using System.Diagnostics;

namespace NegDistill.Method;

/// <summary>
/// Progress of a whole run of many parts (the demo's pretraining, every stage of every seed, every
/// evaluation), as a reporter around another: each part has an estimated cost (any unit, e.g. training
/// tokens), and every progress line of a part gets the run's share done and an ETA for the whole run,
/// from the time per unit of cost measured so far in this process (parts skipped because they were
/// complete count as done but not into the rate). Lines and parts' own bars pass through unchanged.
/// </summary>
public sealed class RunProgress : IReporter
{
    readonly IReporter _inner;
    readonly Dictionary<string, double> _cost = new();
    readonly HashSet<string> _done = new();
    readonly Stopwatch _clock = Stopwatch.StartNew();
    readonly Func<TimeSpan> _now;
    double _total, _doneCost, _measuredCost;
    TimeSpan _measuredTime, _partStart;
    string? _part;
    double _partFraction;

    /// <param name="now">the clock (tests pass their own)</param>
    public RunProgress(IReporter inner, IEnumerable<(string Part, double Cost)> plan, Func<TimeSpan>? now = null)
    {
        _inner = inner;
        _now = now ?? (() => _clock.Elapsed);
        foreach (var (part, cost) in plan)
        {
            if (!(cost >= 0)) throw new ArgumentOutOfRangeException(nameof(plan), $"part '{part}': cost must be non-negative (got {cost})");
            if (!_cost.TryAdd(part, cost)) throw new ArgumentException($"part '{part}' is planned twice", nameof(plan));
            _total += cost;
        }
    }

    /// <summary>The share of the planned cost done, counting the current part's own progress.</summary>
    public double Fraction => _total > 0 ? Math.Min(1, (_doneCost + (_part != null ? _cost[_part] * _partFraction : 0)) / _total) : 1;

    /// <summary>Estimated time left: the rest of the plan at the rate measured so far (null before any part finished or moved).</summary>
    public TimeSpan? Eta
    {
        get
        {
            double cost = _measuredCost, seconds = _measuredTime.TotalSeconds;
            if (_part != null) { cost += _cost[_part] * _partFraction; seconds += (_now() - _partStart).TotalSeconds; }
            if (cost <= 0) return null;
            double left = _total - _doneCost - (_part != null ? _cost[_part] * _partFraction : 0);
            return TimeSpan.FromSeconds(Math.Max(0, left) * seconds / cost);
        }
    }

    /// <summary>The run-wide part of a progress line: "run 42 % ETA 06:10".</summary>
    public string Status => $"run {100 * Fraction:F0} %" + (Eta is { } e ? $" ETA {(int)e.TotalMinutes:00}:{e.Seconds:00}" : "");

    /// <summary>Starts part <paramref name="part"/> (planned); the previous one, if any, is done.</summary>
    public void Begin(string part)
    {
        if (!_cost.ContainsKey(part)) throw new ArgumentException($"part '{part}' is not in the plan");
        if (_part != null) Done(_part);
        (_part, _partFraction, _partStart) = (part, 0, _now());
    }

    /// <summary>Part <paramref name="part"/> is over; <paramref name="skipped"/>: it was already complete (no time spent on it).</summary>
    public void Done(string part, bool skipped = false)
    {
        if (!_cost.ContainsKey(part)) throw new ArgumentException($"part '{part}' is not in the plan");
        if (!_done.Add(part)) return;
        _doneCost += _cost[part];
        if (part == _part)
        {
            if (!skipped) { _measuredCost += _cost[part]; _measuredTime += _now() - _partStart; }
            _part = null;
        }
    }

    public void Line(string text) => _inner.Line(text);

    public void Progress(string name, int done, int total, string info)
    {
        if (_part != null) _partFraction = total > 0 ? Math.Clamp((double)done / total, 0, 1) : 1;
        _inner.Progress(name, done, total, $"{info}  | {Status}");
    }

    public void EndProgress(string name) => _inner.EndProgress(name);
}
