// GraphiQL against this node: queries and mutations over POST /graphql,
// subscriptions over /graphql/ws (graphql-ws), both with the token pasted
// above (kept in sessionStorage: this tab only).
(function () {
  "use strict";
  var KEY = "taskherd.token";
  var form = document.getElementById("auth");
  var input = document.getElementById("token");
  var state = document.getElementById("state");
  var wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql/ws";
  var ws = null;

  function token() {
    return (sessionStorage.getItem(KEY) || "").trim();
  }

  function client() {
    if (!ws) {
      ws = graphqlWs.createClient({
        url: wsUrl,
        lazy: true,
        connectionParams: function () {
          return { token: token() };
        },
      });
    }
    return ws;
  }

  // Whether the operation to run is a subscription (comments and strings
  // are left out before looking at the operation keywords).
  function isSubscription(params) {
    var doc = String(params.query || "")
      .replace(/"""[\s\S]*?"""/g, '""')
      .replace(/"(?:\\.|[^"\\])*"/g, '""')
      .replace(/#[^\n]*/g, "");
    var re = /(^|[}\s])(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g;
    var ops = [];
    var m;
    while ((m = re.exec(doc)) !== null) ops.push({ type: m[2], name: m[3] });
    if (params.operationName) {
      for (var i = 0; i < ops.length; i++) {
        if (ops[i].name === params.operationName) return ops[i].type === "subscription";
      }
    }
    return ops.length > 0 && ops[0].type === "subscription";
  }

  function fetcher(params, options) {
    if (!token()) {
      // Every operation needs a token: ask for one instead of a 401.
      return Promise.resolve({ errors: [{ message: "paste a token above first" }] });
    }
    if (isSubscription(params)) {
      return {
        subscribe: function (sink) {
          var dispose = client().subscribe(params, sink);
          return { unsubscribe: dispose };
        },
      };
    }
    var headers = Object.assign({ "content-type": "application/json" }, (options && options.headers) || {});
    if (!headers.Authorization && !headers.authorization) {
      headers.Authorization = "Bearer " + token();
    }
    return fetch("/graphql", { method: "POST", headers: headers, body: JSON.stringify(params) }).then(
      function (r) {
        return r.json();
      },
    );
  }

  var DEFAULT_QUERY = [
    "# Paste a token above, then run an operation (Ctrl-Enter).",
    "query GetTasks {",
    "  aiTasks(pagination: { page: 1, limit: 20 }) {",
    "    tasks { id taskType status priority createdAt agent { name type } }",
    "    totalCount",
    "    pageInfo { hasNextPage currentPage totalPages nextCursor }",
    "  }",
    "}",
    "",
    "subscription TaskUpdates {",
    "  aiTaskStatusChanged { id status errorMessage completedAt }",
    "}",
    "",
  ].join("\n");

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  var generation = 0;

  function render() {
    generation += 1;
    state.textContent = token() ? "token set" : "no token: the schema needs one";
    // A new key remounts GraphiQL, which then reads the schema again.
    root.render(
      React.createElement(GraphiQL, {
        key: generation,
        fetcher: fetcher,
        defaultQuery: DEFAULT_QUERY,
        shouldPersistHeaders: false,
      }),
    );
  }

  input.value = token();
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(KEY, input.value.trim());
    if (ws) {
      ws.dispose();
      ws = null;
    }
    render();
  });
  render();
})();
