using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using NegDistill.Data.Evaluation;

namespace NegDistill.Data;

/// <summary>The data layer's JSON records with System.Text.Json source generation: snake_case names,
/// NaN and ±Infinity as the named string literals, required constructor parameters and nullability
/// enforced, non-ASCII kept readable.</summary>
[JsonSerializable(typeof(Candidate))]
[JsonSerializable(typeof(string[]))]
public sealed partial class DataJson : JsonSerializerContext
{
    /// <summary>The context with the data layer's options.</summary>
    public static DataJson Lines { get; } = new(new JsonSerializerOptions
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        RespectRequiredConstructorParameters = true,
        RespectNullableAnnotations = true,
        // keep the file readable (no \u-escaping of non-ASCII or '+'); JSON stays valid
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
