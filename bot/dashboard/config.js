// Where the dashboard finds Arbiter's API.
//
// Empty: the server this page came from (Arbiter serves the dashboard at / and the API at
// /api/, also below a path prefix). To serve these files from another host or a CDN, set
// the Arbiter server's URL, e.g. "https://arbiter.example.com", and add this page's origin
// (e.g. "https://dash.example.com") to that server's ARBITER_CORS_ORIGINS. The sign-in form
// can also point a session at another server.
window.ARBITER_DASHBOARD = {
  apiBaseUrl: "",
};
