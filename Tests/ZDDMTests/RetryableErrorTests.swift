import Testing
import ZDDM
import ZDDMTesting

@Suite("ZDDMError says whether retrying can cure it")
struct RetryableErrorTests {
    @Test("Refused input, rates, transitions, mappings and unsupported operations are not retryable")
    func refusals() {
        for code in [ZDDMError.Code.invalidArgument, .invalidRate, .refusedTransition, .mappingFailed, .unsupported] {
            #expect(!ZDDMError(code, message: "").isRetryable, "\(code)")
        }
    }

    @Test("A store or connection failure is what its underlying error says, retryable when it says nothing")
    func underlying() {
        for code in [ZDDMError.Code.storeFailed, .connectionFailed, .io] {
            #expect(ZDDMError(code, message: "").isRetryable, "\(code)")
            #expect(!ZDDMError(code, message: "", underlying: PermanentFault()).isRetryable, "\(code)")
            #expect(ZDDMError(code, message: "", underlying: CancellationError()).isRetryable == false, "\(code)")
            let nested = ZDDMError(
                code,
                message: "",
                underlying: ZDDMError(.storeFailed, message: "", underlying: PermanentFault())
            )
            #expect(!nested.isRetryable, "\(code)")
        }
        #expect(ZDDMError.isRetryable(InjectedFault(operation: .read, applied: false)))
        #expect(!ZDDMError.isRetryable(CancellationError()))
    }
}

/// An error that says retrying cannot cure it, as a missing table does.
struct PermanentFault: RetryableError, ValueFreeDescription {
    var isRetryable: Bool { false }
    var description: String { "a missing table (injected)" }
}
