// Russian and English. The language comes from ?lang=, else the last choice, else the browser.
const STRINGS = {
  en: {
    app: "CRM hub", inbox: "Inbox", contacts: "Contacts", pipeline: "Pipeline", tasks: "Tasks",
    dashboard: "Dashboard", channels: "Channels", search: "Search", searchHint: "Phone, email or name",
    signIn: "Sign in", signOut: "Sign out", email: "Email", password: "Password",
    wrongPair: "The email or the password is wrong.", tooMany: "Too many attempts. Try again later.",
    language: "Language", mainNav: "Main navigation", loading: "Loading…", nothing: "Nothing here yet.",
    accept: "Accept", reject: "Reject", link: "Link to a contact", linkTo: "Contact to link",
    linkBtn: "Link", pending: "Pending", allChannels: "All channels", newLead: "New lead",
    shortcuts: "Shortcuts: j/k move, a accept, r reject, l link", received: "Received",
    name: "Name", phones: "Phones", emails: "Emails", tags: "Tags", owner: "Owner", noOwner: "Nobody",
    save: "Save", saved: "Saved", edit: "Edit fields", cancel: "Cancel", customFields: "Custom fields",
    deals: "Deals", openTasks: "Open tasks", timeline: "Timeline", addNote: "Add a note", note: "Note",
    logCall: "Log a call", callSummary: "What was said", duration: "Duration, s", direction: "Direction",
    dirIn: "Incoming", dirOut: "Outgoing", status: "Status", answered: "answered", missed: "missed",
    busy: "busy", failed: "failed", createTask: "Create a task", title: "Title", kind: "Kind",
    due: "Due", assignee: "Assignee", add: "Add", create: "Create", recording: "Recording",
    thread: "Thread", utm: "UTM", fields: "Fields", source: "Source", amount: "Amount", stage: "Stage",
    moveTo: "Move to", lostReason: "Loss reason", lostAsk: "Why was the deal lost?", move: "Move",
    filterOwner: "Owner", everyone: "Everyone", deal: "Deal", count: "deals", myDay: "My day",
    overdue: "Overdue", today: "Today", upcoming: "Upcoming", complete: "Complete",
    reschedule: "Reschedule", workload: "Workload per manager", manager: "Manager", open: "Open",
    dueToday: "Due today", reassign: "Reassign", from: "From", to: "To", period: "Period",
    thisMonth: "This month", last30: "Last 30 days", thisYear: "This year", allTime: "All time",
    apply: "Apply", funnel: "Funnel", sources: "Lead sources", roi: "ROI", leads: "Leads", won: "Won",
    lost: "Lost", revenue: "Revenue", cost: "Cost", planVsActual: "Plan vs actual", plan: "Plan",
    actual: "Actual", forecast: "Forecast", weighted: "Weighted", responseTime: "Response time",
    avgMinutes: "Average, min", withinSla: "Within SLA", winRate: "Win rate", newChannel: "New channel",
    intake: "Intake", intakeInbox: "Inbox (check first)", intakeAuto: "Straight to the card",
    webhookUrl: "Webhook URL", copy: "Copy", copied: "Copied", health: "Health",
    lastSuccess: "Last success", lastError: "Last error", rejectedCount: "Rejected",
    receivedCount: "Received", rejectedHooks: "Recent rejected hooks", never: "never",
    results: "Results", noResults: "No contact found.", newContact: "New contact", kinds: "Kind",
    call: "Call", meeting: "Meeting", other: "Other", proposal: "Proposal", emailKind: "Email",
    message: "Message", form: "Form", ad_lead: "Ad lead", task: "Task", unowned: "Unassigned",
    done: "Done", error: "Something went wrong", forbidden: "Not allowed", close: "Close",
    wonStage: "Won", lostStage: "Lost", reasonRequired: "Give a reason", admin: "admin",
    openCard: "Open the card", newDeal: "New deal", dealTitle: "Deal title", entered: "Entered", movedOn: "Moved on", users: "Users", total: "Total", none: "—", skip: "Skip to content", reload: "Reload",
  },
  ru: {
    app: "CRM-хаб", inbox: "Неразобранное", contacts: "Контакты", pipeline: "Воронка", tasks: "Задачи",
    dashboard: "Аналитика", channels: "Каналы", search: "Поиск", searchHint: "Телефон, email или имя",
    signIn: "Войти", signOut: "Выйти", email: "Эл. почта", password: "Пароль",
    wrongPair: "Неверная почта или пароль.", tooMany: "Слишком много попыток. Попробуйте позже.",
    language: "Язык", mainNav: "Главное меню", loading: "Загрузка…", nothing: "Пока пусто.",
    accept: "Принять", reject: "Отклонить", link: "Привязать к контакту", linkTo: "Контакт для привязки",
    linkBtn: "Привязать", pending: "Ожидают", allChannels: "Все каналы", newLead: "Новая заявка",
    shortcuts: "Клавиши: j/k — выбор, a — принять, r — отклонить, l — привязать", received: "Получено",
    name: "Имя", phones: "Телефоны", emails: "Почта", tags: "Метки", owner: "Ответственный",
    noOwner: "Никто", save: "Сохранить", saved: "Сохранено", edit: "Изменить поля", cancel: "Отмена",
    customFields: "Дополнительные поля", deals: "Сделки", openTasks: "Открытые задачи",
    timeline: "История", addNote: "Добавить заметку", note: "Заметка", logCall: "Записать звонок",
    callSummary: "О чём говорили", duration: "Длительность, с", direction: "Направление",
    dirIn: "Входящий", dirOut: "Исходящий", status: "Статус", answered: "отвечен", missed: "пропущен",
    busy: "занято", failed: "не удался", createTask: "Создать задачу", title: "Название", kind: "Тип",
    due: "Срок", assignee: "Исполнитель", add: "Добавить", create: "Создать", recording: "Запись",
    thread: "Переписка", utm: "UTM", fields: "Поля", source: "Источник", amount: "Сумма",
    stage: "Этап", moveTo: "Перенести в", lostReason: "Причина отказа",
    lostAsk: "Почему сделка проиграна?", move: "Перенести", filterOwner: "Ответственный",
    everyone: "Все", deal: "Сделка", count: "сделок", myDay: "Мой день", overdue: "Просрочено",
    today: "Сегодня", upcoming: "Предстоящие", complete: "Выполнить", reschedule: "Перенести срок",
    workload: "Загрузка менеджеров", manager: "Менеджер", open: "Открыто", dueToday: "На сегодня",
    reassign: "Передать задачи", from: "От", to: "Кому", period: "Период", thisMonth: "Этот месяц",
    last30: "30 дней", thisYear: "Этот год", allTime: "Всё время", apply: "Показать",
    funnel: "Воронка продаж", sources: "Источники заявок", roi: "ROI", leads: "Заявки",
    won: "Выиграно", lost: "Проиграно", revenue: "Выручка", cost: "Расходы",
    planVsActual: "План и факт", plan: "План", actual: "Факт", forecast: "Прогноз",
    weighted: "Взвешенно", responseTime: "Время реакции", avgMinutes: "В среднем, мин",
    withinSla: "В пределах SLA", winRate: "Доля выигранных", newChannel: "Новый канал",
    intake: "Приём", intakeInbox: "В неразобранное", intakeAuto: "Сразу в карточку",
    webhookUrl: "Адрес вебхука", copy: "Копировать", copied: "Скопировано", health: "Состояние",
    lastSuccess: "Последний успех", lastError: "Последняя ошибка", rejectedCount: "Отклонено",
    receivedCount: "Принято", rejectedHooks: "Последние отклонённые запросы", never: "никогда",
    results: "Найдено", noResults: "Контакты не найдены.", newContact: "Новый контакт", kinds: "Тип",
    call: "Звонок", meeting: "Встреча", other: "Другое", proposal: "Предложение", emailKind: "Письмо",
    message: "Сообщение", form: "Заявка с формы", ad_lead: "Заявка из рекламы", task: "Задача",
    unowned: "Без исполнителя", done: "Готово", error: "Что-то пошло не так", forbidden: "Нет прав",
    close: "Закрыть", wonStage: "Успешно", lostStage: "Отказ", reasonRequired: "Укажите причину",
    admin: "администратор", openCard: "Открыть карточку", newDeal: "Новая сделка", dealTitle: "Название сделки", entered: "Вошли в этап", movedOn: "Прошли дальше", users: "Пользователи", total: "Итого", none: "—",
    skip: "К содержимому", reload: "Обновить",
  },
};

export const LANGS = ["ru", "en"];

export function pickLang() {
  const param = new URLSearchParams(location.search).get("lang");
  if (param && LANGS.includes(param)) {
    localStorage.setItem("crm.lang", param);
    return param;
  }
  const saved = localStorage.getItem("crm.lang");
  if (saved && LANGS.includes(saved)) return saved;
  const browser = (navigator.languages || [navigator.language || "en"]).map((l) => l.slice(0, 2));
  return browser.find((l) => LANGS.includes(l)) || "en";
}

export let lang = pickLang();

export function setLang(next) {
  lang = next;
  localStorage.setItem("crm.lang", next);
  document.documentElement.lang = next;
}

export function t(key) {
  return STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
}

const locale = () => (lang === "ru" ? "ru-RU" : "en-GB");

export function fmtDate(iso, withTime = true) {
  if (!iso) return t("never");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const opts = withTime
    ? { dateStyle: "medium", timeStyle: "short" }
    : { dateStyle: "medium" };
  return new Intl.DateTimeFormat(locale(), opts).format(d);
}

export function fmtMoney(amount, currency = "RUB") {
  const n = Number(amount || 0);
  try {
    return new Intl.NumberFormat(locale(), { style: "currency", currency, maximumFractionDigits: 0 }).format(n);
  } catch {
    return `${n.toFixed(0)} ${currency}`;
  }
}

export function fmtNumber(n, digits = 0) {
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(Number(n || 0));
}

export function fmtPercent(fraction) {
  if (fraction === null || fraction === undefined) return t("none");
  return new Intl.NumberFormat(locale(), { style: "percent", maximumFractionDigits: 1 }).format(fraction);
}
