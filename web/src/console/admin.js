// Admins: the moderation queue and the onboarding collection's order.

import { get, post, put } from "./api.js";
import { act, h, notice, replace, when } from "./dom.js";

export function moderation(main) {
  const rows = h("tbody");
  const load = async () => {
    const { videos } = await get("/v1/moderation?limit=100");
    replace(
      rows,
      videos.length
        ? videos.map((v) => {
            const reason = h("input", { "aria-label": `Reason for ${v.title || v.id}`, placeholder: "Reason (optional)", maxlength: 2000 });
            const decide = (decision, label) => {
              const b = h("button", { type: "button", class: decision === "rejected" ? "danger" : "" }, label);
              b.addEventListener("click", () =>
                act(b, async () => {
                  await post(`/v1/videos/${v.id}/moderation`, { decision, reason: reason.value || null });
                  await load();
                }),
              );
              return b;
            };
            return h(
              "tr",
              { dataset: { id: v.id } },
              h("td", {}, h("a", { href: `#/videos/${v.id}` }, v.title || v.filename || v.id)),
              h("td", {}, v.status),
              h("td", {}, v.verification),
              h("td", {}, when(v.created_at)),
              h("td", {}, reason, " ", decide("verified", "Approve"), " ", decide("rejected", "Reject")),
            );
          })
        : h("tr", {}, h("td", { colspan: 5 }, "Nothing awaits a decision.")),
    );
  };
  replace(
    main,
    h("h1", {}, "Moderation"),
    h("p", {}, "Whole videos of every user that no one has decided on yet, oldest first."),
    h(
      "table",
      { id: "moderation" },
      h("thead", {}, h("tr", {}, ["Video", "Status", "Verification", "Created", "Decision"].map((t) => h("th", { scope: "col" }, t)))),
      rows,
    ),
  );
  load().catch((e) => notice(e.message));
}

export function onboarding(main) {
  const list = h("ol", { class: "sortable", id: "onboarding-order" });
  const save = h("button", { type: "button" }, "Save order");
  let dragged = null;
  const item = (v) => {
    const li = h("li", { draggable: "true", dataset: { id: v.video_id } });
    const move = (delta, label) => {
      const b = h("button", { type: "button", "aria-label": `${label}: ${v.title || v.video_id}` }, delta < 0 ? "↑" : "↓");
      b.addEventListener("click", () => {
        const sibling = delta < 0 ? li.previousElementSibling : li.nextElementSibling;
        if (sibling) delta < 0 ? sibling.before(li) : sibling.after(li);
        b.focus();
      });
      return b;
    };
    const shown = ["UPLOADED", "ENCODING", "READY"].includes(v.status) && v.verification !== "rejected";
    li.append(
      h("span", { class: "grip", "aria-hidden": "true" }, "⠿ "),
      v.title || v.video_id,
      " ",
      !shown && h("span", { class: "badge" }, `${v.status.toLowerCase()}, ${v.verification.replace("_", " ")}: not shown yet`),
      " ",
      move(-1, "Move up"),
      move(1, "Move down"),
    );
    li.addEventListener("dragstart", () => (dragged = li));
    li.addEventListener("dragover", (e) => e.preventDefault());
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      if (dragged && dragged !== li) li.before(dragged);
    });
    return li;
  };
  save.addEventListener("click", () =>
    act(save, async () => {
      const video_ids = [...list.children].map((li) => li.dataset.id);
      await put("/v1/onboarding", { video_ids });
      notice("Order saved.", "ok");
    }),
  );
  replace(
    main,
    h("h1", {}, "Onboarding"),
    h(
      "p",
      {},
      "Drag the videos, or use the arrows, then save. New onboarding videos are uploaded with the Onboarding box ticked; the app shows those that play and moderation allows.",
    ),
    list,
    save,
  );
  get("/v1/onboarding/members")
    .then(({ videos }) => replace(list, videos.length ? videos.map(item) : h("li", {}, "No onboarding videos yet.")))
    .catch((e) => notice(e.message));
}
