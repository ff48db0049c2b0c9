using System.CommandLine;
using NegDistill.Method.Settings;

namespace NegDistill.Cli;

/// <summary>
/// Command-line options made from a settings record's declarations (<see cref="SettingInfo"/>: the
/// option's name and help) with the record's own defaults, and bound back into the record, so a
/// setting is declared once and the command line only lists which ones a verb takes.
/// </summary>
sealed class Bound<TSettings>(TSettings defaults) where TSettings : class
{
    readonly List<Func<ParseResult, TSettings, TSettings>> _binders = new();

    public Option<T> Add<T>(Command cmd, SettingInfo info, Func<TSettings, T> get, Func<TSettings, T, TSettings> set, bool required = false)
    {
        var o = new Option<T>(info.Option!) { Description = info.Help, Required = required };
        if (!required) o.DefaultValueFactory = _ => get(defaults);
        cmd.Options.Add(o);
        _binders.Add((r, s) => r.GetResult(o) == null && required ? s : set(s, r.GetValue(o)!));
        return o;
    }

    /// <summary>The record with every option's value (its default where not given).</summary>
    public TSettings Bind(ParseResult r) => _binders.Aggregate(defaults, (s, b) => b(r, s));
}
