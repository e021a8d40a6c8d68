import Testing
import ZDDMTesting

@Suite("The stale-read checker")
struct ConsistencyCheckerTests {
    typealias Checker = ConsistencyChecker<Int, String>
    typealias Event = Checker.Event

    private func check(_ events: [Event], initial: [Int: String] = [:]) -> [Checker.Violation] {
        var checker = Checker(initial: initial)
        checker.record(events)
        return checker.violations()
    }

    @Test("A read after an acknowledged overwrite that returns the older value is stale; the newer one is not")
    func overwriteThenRead() {
        let writes = [
            Event(key: 1, operation: .write("a"), start: 0, end: 10),
            Event(key: 1, operation: .write("b"), start: 20, end: 30),
        ]
        #expect(check(writes + [Event(key: 1, operation: .read("a"), start: 40, end: 50)]).count == 1)
        #expect(check(writes + [Event(key: 1, operation: .read("b"), start: 40, end: 50)]).isEmpty)
        // Started before the overwrite was acknowledged: either value is fine.
        #expect(check(writes + [Event(key: 1, operation: .read("a"), start: 25, end: 50)]).isEmpty)
    }

    @Test("Overlapping writes are not ordered: a later read may return either")
    func overlappingWrites() {
        let writes = [
            Event(key: 1, operation: .write("a"), start: 0, end: 20),
            Event(key: 1, operation: .write("b"), start: 10, end: 30),
        ]
        #expect(check(writes + [Event(key: 1, operation: .read("a"), start: 40, end: 50)]).isEmpty)
        #expect(check(writes + [Event(key: 1, operation: .read("b"), start: 40, end: 50)]).isEmpty)
    }

    @Test("Nothing after an acknowledged write is stale; after a delete it is not; initial values count")
    func absence() {
        let history = [
            Event(key: 1, operation: .write("a"), start: 0, end: 10),
            Event(key: 1, operation: .read(nil), start: 20, end: 30),
            Event(key: 2, operation: .read(nil), start: 20, end: 30),
            Event(key: 3, operation: .read("x"), start: 20, end: 30),
            Event(key: 3, operation: .delete, start: 40, end: 50),
            Event(key: 3, operation: .read(nil), start: 60, end: 70),
            Event(key: 3, operation: .read("x"), start: 60, end: 70),
        ]
        let violations = check(history, initial: [3: "x"])
        #expect(violations.map(\.read.key) == [1, 3])
        #expect(violations.allSatisfy { !$0.phantom })
    }

    @Test("A value nobody wrote is a phantom; an uncertain write makes its value possible but orders nothing")
    func phantomsAndUncertain() {
        let history = [
            Event(key: 1, operation: .read("ghost"), start: 0, end: 1),
            Event(key: 2, operation: .uncertain("maybe"), start: 0, end: 10),
            Event(key: 2, operation: .read("maybe"), start: 20, end: 30),
            Event(key: 2, operation: .read(nil), start: 20, end: 30),
        ]
        let violations = check(history)
        #expect(violations.count == 1)
        #expect(violations.first?.phantom == true && violations.first?.read.key == 1)
    }
}
