namespace NegDistill.Runtime;

/// <summary>A value went NaN or ±Infinity where the math needs finite ones: in training, a loss or gradient
/// (the message names the step, micro-batch(es), data index(es), the first non-finite parameter, gradient
/// or activation, and where the last good checkpoint is); in sampling, a row's logits. Exit code 4.</summary>
public sealed class NonFiniteException(string message) : Exception(message);
